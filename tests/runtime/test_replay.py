"""End to end: the demo's traffic written to a file, replayed through the real CLI, alerts checked."""

import subprocess
import sys

import orjson
import pytest

from monitor.contracts.alerts import Alert
from monitor.runtime.demo import detection_of
from monitor.sim.synth import Scenario

pytestmark = pytest.mark.integration


def advmon(*args, cwd):
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    result = advmon("demo", "--metrics-port", "0", "--no-progress", "--events-out", "events.jsonl",
                    "--profile-out", "profile.npz", "--alerts-out", "demo-alerts.jsonl", cwd=work)
    assert result.returncode == 0, result.stderr
    return work, result


def read_alerts(path):
    return [Alert.model_validate(orjson.loads(line)) for line in path.read_bytes().splitlines()]


def test_demo_detects_every_scripted_attack_without_false_alarms(demo_run):
    work, result = demo_run
    assert "NOT DETECTED" not in result.stdout, result.stdout
    assert "other alerts" not in result.stdout, result.stdout
    assert "FIRING" in result.stdout  # alerts printed as they fire


def test_replay_is_deterministic_and_finds_the_attacks(demo_run):
    work, _ = demo_run
    runs = []
    for name in ("a", "b"):
        result = advmon("replay", "events.jsonl", "--profile", "profile.npz", "--alerts-out", f"{name}.jsonl",
                        "--dlq-out", f"{name}-dlq.jsonl", cwd=work)
        assert result.returncode == 0, result.stderr
        runs.append(result)
    assert (work / "a.jsonl").read_bytes() == (work / "b.jsonl").read_bytes()
    alerts = read_alerts(work / "a.jsonl")
    scenario = Scenario.build(seed=0)
    for phase in scenario.phases:
        found = detection_of(phase, scenario.start_ts, alerts)
        assert found is not None, f"replay missed {phase.name}"
        assert found.time_to_detect_s is not None and found.time_to_detect_s < 900
    for alert in alerts:
        if alert.status == "resolved":
            assert any(a.dedup_key == alert.dedup_key and a.status == "firing" for a in alerts)


def test_replay_dead_letters_every_malformed_line(demo_run):
    work, _ = demo_run
    lines = (work / "events.jsonl").read_bytes().splitlines()
    bad = [i + 1 for i, line in enumerate(lines) if not line.startswith(b'{"model"')]
    dead = [orjson.loads(line) for line in (work / "a-dlq.jsonl").read_bytes().splitlines()]
    assert bad and [int(d["source"].rsplit(":", 1)[1]) for d in dead] == bad
    assert all(d["reason"].startswith(("invalid JSON", "invalid event")) for d in dead)


def test_replay_without_profile_still_catches_query_attacks(demo_run):
    work, _ = demo_run
    result = advmon("replay", "events.jsonl", "--alerts-out", "noprof.jsonl", "--dlq-out", "noprof-dlq.jsonl", cwd=work)
    assert result.returncode == 0 and "no --profile" in result.stderr
    alerts = read_alerts(work / "noprof.jsonl")
    assert any(a.slo == "client-standout" and a.client_id == "key_bb_4410" for a in alerts)
    assert not any(a.slo == "profile-mismatch" for a in alerts)  # no profile: no input anomaly scores


def test_replay_of_missing_file_is_a_clear_error(tmp_path):
    result = advmon("replay", "nope.jsonl", cwd=tmp_path)
    assert result.returncode != 0 and "no such file" in result.stderr
