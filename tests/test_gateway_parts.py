"""The gateway's building blocks on their own: SSE parsing, policy, keys, times, CLI."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiofast.auth import KeyRing, digest, extract_key
from aiofast.cli import main
from aiofast.cli.serve import check_exposure
from aiofast.errors import ConfigError
from aiofast.policy import KeyPolicy, default_policy, load_policy, policy_from_mapping
from aiofast.replay import load_conversations
from aiofast.sse import SSEParser
from aiofast.timespec import parse_time
from gateway_support import WIRE

STREAMS = sorted(p for p in WIRE.rglob("*.sse"))


def _events(chunks: list[bytes]) -> list[tuple[str, str, bytes]]:
    parser = SSEParser()
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    tail = parser.finish()
    if tail is not None:
        events.append(tail)
    return [(e.event, e.data, e.raw) for e in events]


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=30))
def test_sse_events_do_not_depend_on_where_reads_split(path: Path, cuts: list[int]) -> None:
    payload = path.read_bytes()
    points = sorted({c % (len(payload) + 1) for c in cuts})
    pieces = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]
    whole = _events([payload])
    assert _events(pieces) == whole
    relayed = b"".join(raw for _, _, raw in whole)
    # Byte for byte, except that a missing final blank line is added.
    assert relayed.rstrip(b"\n") == payload.rstrip(b"\n")
    assert relayed.endswith(b"\n\n")


def test_sse_handles_crlf_and_multiline_data() -> None:
    events = _events([b"event: x\r\ndata: a\r\ndata: b\r\n\r\n: comment\n\ndata: c\n\n"])
    assert [(name, data) for name, data, _ in events] == [("x", "a\nb"), ("", "c")]


def test_default_policy_has_three_priced_tiers() -> None:
    policy = default_policy()
    assert list(policy.tiers) == ["small", "medium", "large"]
    assert [policy.deployment(t[0]).model for t in policy.tiers.values()] == [
        "gpt-4o-mini",
        "gpt-4o",
        "o3",
    ]
    assert not policy.auth_required


def test_deployments_and_upstreams_are_found_by_name_after_a_copy() -> None:
    policy = default_policy()
    first = policy.deployments[0]
    assert policy.deployment(first.name) is first
    assert policy.upstream(first.upstream).name == first.upstream
    # An index built before a copy never answers for the copy's own deployments.
    renamed = first.model_copy(update={"name": "renamed"})
    copy = policy.model_copy(update={"deployments": (renamed,)})
    assert copy.deployment("renamed") is renamed
    with pytest.raises(KeyError):
        copy.deployment(first.name)
    assert copy == policy.model_copy(update={"deployments": (renamed,)})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tiers": {"a": ["missing"]}}, "tiers.a: unknown deployment 'missing'"),
        ({"upstreams": [{"name": "u", "kind": "openai"}]}, "base_url is required"),
        (
            {"upstreams": [{"name": "u", "kind": "simulated", "timeouts": {"connect": -1}}]},
            "upstreams.0.timeouts.connect: Input should be greater than 0",
        ),
        ({"servr": {}}, "servr: unknown key"),
        ({"keys": [{"digest": "plain-text-key"}]}, "keys.0.digest"),
        ({"server": {"open_routes": ["usage"]}}, "server.open_routes.0"),
        ({"version": 3}, "version: Input should be a valid string"),
    ],
)
def test_policy_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        policy_from_mapping(data)
    assert message in str(error.value)


def test_policy_file_loads_and_secrets_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'version = "2026-12-03.1"\n'
        "[[upstreams]]\n"
        'name = "openai"\nkind = "openai"\nbase_url = "https://api.openai.com/v1"\n'
        'api_key_env = "AIOFAST_TEST_OPENAI_KEY"\n'
        "timeouts = { connect = 2, first_byte = 15, total = 120 }\n"
    )
    policy = load_policy(path)
    assert policy.upstreams[0].timeouts.connect == 2.0
    monkeypatch.delenv("AIOFAST_TEST_OPENAI_KEY", raising=False)
    with pytest.raises(ConfigError, match="AIOFAST_TEST_OPENAI_KEY"):
        policy.upstreams[0].api_key()
    monkeypatch.setenv("AIOFAST_TEST_OPENAI_KEY", "sk-x")
    assert policy.upstreams[0].api_key() == "sk-x"
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("version = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(tmp_path / "bad.toml")


def test_example_policy_loads() -> None:
    policy = load_policy(Path(__file__).parent.parent / "examples" / "aiofast.toml")
    assert policy.auth_required
    assert {u.kind for u in policy.upstreams} == {"openai", "anthropic", "simulated"}


def test_keys_match_by_digest_only() -> None:
    ring = KeyRing([KeyPolicy(digest=digest("sk-1"), user="u1"), KeyPolicy(digest=digest("sk-2"))])
    identity = ring.identify("sk-1")
    assert identity is not None
    assert identity.user == "u1"
    assert ring.identify("sk-3") is None
    assert ring.identify(None) is None
    assert extract_key({"Authorization": "Bearer  sk-1 "}) == "sk-1"
    assert extract_key({"Authorization": "Basic abc"}) is None
    assert extract_key({"x-api-key": "sk-2"}) == "sk-2"


def test_exposure_beyond_loopback_needs_keys_or_allow_open() -> None:
    policy = default_policy()
    check_exposure(policy, "127.0.0.1", allow_open=False)
    check_exposure(policy, "::1", allow_open=False)
    check_exposure(policy, "0.0.0.0", allow_open=True)
    with pytest.raises(ConfigError, match="--allow-open"):
        check_exposure(policy, "0.0.0.0", allow_open=False)


def test_times_as_typed() -> None:
    assert parse_time("1700000000") == 1700000000.0
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("2026-12-03T00:00:00Z") == 1796256000.0
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


def test_prompt_layouts_are_recognised(tmp_path: Path) -> None:
    files = {
        "mt.jsonl": b'{"question_id": 1, "turns": ["a", "b"]}\n',
        "alpaca.json": orjson.dumps([{"instruction": "do", "input": "this", "output": "x"}]),
        "seed.jsonl": orjson.dumps({"instruction": "do", "instances": [{"input": "it"}]}),
        "sharegpt.json": orjson.dumps(
            [{"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "r"}]}]
        ),
        "traffic.jsonl": orjson.dumps({"request": {"model": "m", "messages": []}}),
    }
    loaded = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        loaded[name] = load_conversations(tmp_path / name)
    assert loaded["mt.jsonl"][0].turns == ["a", "b"]
    assert loaded["alpaca.json"][0].turns == ["do\n\nthis"]
    assert loaded["seed.jsonl"][0].turns == ["do\n\nit"]
    assert loaded["sharegpt.json"][0].turns == ["q1"]
    assert loaded["traffic.jsonl"][0].request == {"model": "m", "messages": []}
    (tmp_path / "odd.jsonl").write_bytes(b'{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="no known layout"):
        load_conversations(tmp_path / "odd.jsonl")


def test_shipped_sample_and_shared_corpora_load() -> None:
    sample = load_conversations(Path(__file__).parent.parent / "examples" / "mt_bench_sample.jsonl")
    assert len(sample) == 8
    assert all(len(c.turns) == 2 for c in sample)
    shared = Path("/work/shared/data/prompts")
    if not shared.exists():
        pytest.skip("shared prompt corpora are not present on this machine")
    assert len(load_conversations(shared / "mt_bench" / "mt_bench_question.jsonl")) == 80
    assert len(load_conversations(shared / "sharegpt_format" / "dummy_conversation.json")) > 100


def test_replay_and_report_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "usage.sqlite"
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = "replay-test"\n'
        '[[upstreams]]\nname = "sim"\nkind = "simulated"\n'
        "simulated = { ttft_ms = 0, inter_token_ms = 0, max_output_tokens = 30 }\n"
        '[[deployments]]\nname = "small"\nupstream = "sim"\nmodel = "gpt-4o-mini"\n'
        '[tiers]\nsmall = ["small"]\n'
        f'[ledger]\npath = "{ledger}"\n'
    )
    sample = Path(__file__).parent.parent / "examples" / "mt_bench_sample.jsonl"
    assert main(["replay", str(sample), "--config", str(policy), "--json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["requests"] == summary["succeeded"] == 16
    assert summary["by_tier_model"][0]["model"] == "gpt-4o-mini"
    assert summary["cost_usd"] > 0
    assert main(["report", "--config", str(policy), "--by", "tier,model", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["total"][0]["requests"] == 16
    assert report["total"][0]["cost_usd"] == pytest.approx(summary["cost_usd"], abs=1e-6)
    assert main(["report", "--ledger", str(tmp_path / "none.sqlite")]) == 1


def test_keygen_prints_a_key_and_its_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--user", "alice"]) == 0
    out = capsys.readouterr().out
    key = out.split()[1]
    assert f'digest = "{digest(key)}"' in out
    assert 'user = "alice"' in out


def test_serve_prints_a_curl_and_stops_cleanly(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "aiofast.cli", "serve", "--port", "0"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline() for _ in range(6)]
            assert banner[0].startswith("aiofast gateway on http://127.0.0.1:")
            curl = banner[5].strip()
            assert curl.startswith("curl -s http://127.0.0.1:")
            result = subprocess.run(curl, shell=True, capture_output=True, check=True, timeout=30)
            assert orjson.loads(result.stdout)["object"] == "chat.completion"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert process.returncode == 0
    ledger = tmp_path / "aiofast-usage.sqlite"
    assert ledger.exists()
    assert os.path.getsize(ledger) > 0
    connection = sqlite3.connect(ledger)
    try:
        assert connection.execute("SELECT COUNT(*) FROM usage_events").fetchone() == (1,)
    finally:
        connection.close()


def test_serve_refuses_an_open_public_bind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    assert "--allow-open" in capsys.readouterr().err
