"""The package surface: exceptions, the native module and its stubs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import aiofast
from aiofast import errors


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.InvalidInputError, ValueError),
        (errors.ConfigError, ValueError),
        (errors.NotFoundError, KeyError),
        (errors.UpstreamError, ConnectionError),
        (errors.UpstreamTimeoutError, TimeoutError),
    ],
)
def test_every_error_is_an_aiofast_error_and_its_builtin(
    cls: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(cls, errors.AiofastError)
    assert issubclass(cls, builtin)


def test_not_found_message_is_not_quoted() -> None:
    assert str(errors.NotFoundError("unknown encoding 'x'")) == "unknown encoding 'x'"


def test_public_names_exist() -> None:
    for name in aiofast.__all__:
        assert hasattr(aiofast, name), name


def test_native_module_matches_its_stub() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "aiofast._core"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_without_command_prints_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiofast.cli"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "usage: aiofast" in result.stdout
