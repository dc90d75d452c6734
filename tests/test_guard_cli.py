"""`aiofast check`: findings printed without the matched text, exit status, rules files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiofast.cli import main

SECRET = "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5"


def test_check_prints_findings_without_the_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "prompt.txt"
    file.write_text(f"hello\nmy token is {SECRET}\n")
    assert main(["check", str(file)]) == 1
    out = capsys.readouterr().out
    assert "2:13\tsecret.github" in out
    assert SECRET not in out


def test_check_clean_file_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "ok.txt"
    file.write_text("nothing to see here\n")
    assert main(["check", str(file)]) == 0
    assert capsys.readouterr().out == ""


def test_check_with_toml_rules_and_json_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "policy.toml"
    rules.write_text(
        '[guard]\npacks = []\n[[guard.rules]]\nid = "rival"\nkind = "literal"\n'
        'words = ["acme corp"]\naction = "block"\n'
    )
    file = tmp_path / "in.txt"
    file.write_text("we beat ACME Corp")
    assert main(["check", "--rules", str(rules), "--json", str(file)]) == 1
    record = json.loads(capsys.readouterr().out)
    assert (record["rule_id"], record["start"], record["end"]) == ("rival", 8, 17)


def test_check_redact_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "in.txt"
    file.write_text("mail ada@example.org")
    assert main(["check", "--redact", str(file)]) == 0
    assert capsys.readouterr().out == "mail [EMAIL]"


def test_check_bad_rules_file_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{"packs": ["nope"]}')
    file = tmp_path / "in.txt"
    file.write_text("x")
    assert main(["check", "--rules", str(rules), str(file)]) == 1
    assert "unknown pack" in capsys.readouterr().err
