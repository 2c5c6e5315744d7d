"""The console entry points as a user runs them."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from monitor.cli import main


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_demo_serves_metrics_while_it_runs_and_ends_by_itself(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "demo", "--duration", "30m", "--speed", "200",
                             "--metrics-port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    scraped = ""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                scraped = ""
            if 'advmon_events_total{model="digits-mlp"}' in scraped:
                break
            time.sleep(0.5)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert 'advmon_events_total{model="digits-mlp"}' in scraped
    assert "advmon_batch_seconds_bucket" in scraped
    assert "key_" not in scraped  # raw client ids never become label values
    assert proc.returncode == 0, err
    assert "events in" in out and "cycle 0" not in err  # the summary; no progress line when stderr is a pipe


def test_rules_check_prints_derived_tiers(capsys):
    assert main(["rules", "check", "rules"]) == 0
    out = capsys.readouterr().out
    assert "slo profile-mismatch: input_anomaly_rate per model, objective 0.98 (max_rate 10x baseline)" in out
    assert "ticket 1d/2h x3" in out and "clients client-standout: z >= 6.40" in out and "groups sybil-group" in out


def test_rules_check_resolves_relative_objectives_against_a_profile_and_warns(tmp_path, capsys):
    from monitor.detect.profiles import ModelProfile, Profile

    rng = np.random.default_rng(0)
    model = ModelProfile.fit(rng.normal(size=(400, 4)).astype(np.float32), rng.integers(0, 2, 400).astype(str))
    Profile({"m/features": model}, {"m": {"input_anomaly_rate": 0.004, "error_rate": 0.3}}).save(tmp_path / "p.npz")
    (tmp_path / "r.yaml").write_text(
        "slos:\n"
        "  - {name: mismatch, sli: input_anomaly_rate, objective: 0.98, max_rate: 10x baseline, severities: [ticket]}\n"
        "  - {name: accuracy, sli: error_rate, objective: 0.9, severities: [ticket]}\n")
    assert main(["rules", "check", str(tmp_path), "--profile", str(tmp_path / "p.npz")]) == 0
    captured = capsys.readouterr()
    assert "model m: benign input_anomaly_rate 0.400% measured; 4.000% allowed" in captured.out
    assert "WARNING: accuracy allows 10.000% for model m, no more than the 30.000%" in captured.err
    assert "1 warnings" in captured.out


def test_rules_check_reports_errors(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("slos:\n  - {name: x, sli: error_rate, objective: 2}\n")
    assert main(["rules", "check", str(tmp_path)]) == 2
    assert "r.yaml:2" in capsys.readouterr().err


def test_profile_fit_round_trip(tmp_path, capsys):
    import numpy as np
    import orjson

    from monitor.detect.profiles import Profile

    rng = np.random.default_rng(0)
    lines = [
        orjson.dumps(
            {
                "event_id": str(i),
                "ts": i,
                "client_id": "c",
                "model": "m",
                "input": {"features": rng.random(8).tolist(), "embedding": rng.normal(size=4).tolist()},
                "prediction": {"label": str(i % 3), "confidence": 0.9, "logits": rng.normal(size=3).tolist()},
            }
        )
        for i in range(400)
    ]
    (tmp_path / "ref.jsonl").write_bytes(b"\n".join(lines))
    assert main(["profile", "fit", str(tmp_path / "ref.jsonl"), "-o", str(tmp_path / "p.npz")]) == 0
    profile = Profile.load(str(tmp_path / "p.npz"))
    assert set(profile.models) == {"m/features", "m/embedding"}
    assert np.isfinite(profile.get("m", "embedding").thresholds).all()
    assert profile.get("m", "features").bank.shape == (200, 8) and profile.get("m", "features").k == 50
    assert main(["profile", "fit", str(tmp_path / "ref.jsonl"), "-o", str(tmp_path / "s.npz"), "--bank", "50"]) == 0
    sampled = Profile.load(str(tmp_path / "s.npz")).get("m", "features")
    assert sampled.bank.shape == (50, 8) and sampled.k == 12  # the same quantile: 50 of 200, 12 of 50
    assert main(["profile", "fit", str(tmp_path / "ref.jsonl"), "-o", str(tmp_path / "z.npz"), "--bank", "0"]) != 0


def test_errors_are_one_line_with_an_exit_code_and_no_traceback(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ADVMON_BUCKET_SECONDS": "abc"}
    bad_env = subprocess.run([sys.executable, "-m", "monitor", "replay", str(tmp_path / "x.jsonl")], cwd=tmp_path,
                             capture_output=True, text=True, env=env)
    assert bad_env.returncode == 2
    assert bad_env.stderr.strip() == ("advmon replay: ADVMON_BUCKET_SECONDS='abc': Input should be a valid integer, "
                                      "unable to parse string as an integer")
    missing = subprocess.run([sys.executable, "-m", "monitor", "scorer", "--profile", str(tmp_path / "p.npz")],
                             cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "profile" in missing.stderr and "no such file" in missing.stderr


def test_logs_as_json_lines_at_the_configured_level(tmp_path):
    (tmp_path / "events.jsonl").write_bytes(
        b'{"event_id":"a","ts":1,"client_id":"c","prediction":{"label":"1","confidence":0.5}}\n')
    env = {"PATH": "/usr/bin:/bin", "ADVMON_LOG_FORMAT": "json", "ADVMON_BUKET_SECONDS": "5"}
    replayed = subprocess.run([sys.executable, "-m", "monitor", "replay", "events.jsonl"], cwd=tmp_path,
                              capture_output=True, text=True, env=env)
    assert replayed.returncode == 0, replayed.stderr
    logged = [line for line in replayed.stderr.splitlines() if not line.startswith(("advmon replay:", "  "))]
    records = [json.loads(line) for line in logged]  # every log line is one JSON object (the summary is not a log)
    typo = [r for r in records if "ADVMON_BUKET_SECONDS" in r["message"]]
    assert typo and typo[0]["level"] == "WARNING" and typo[0]["ts"].endswith("Z")
    quiet = subprocess.run([sys.executable, "-m", "monitor", "replay", "events.jsonl"], cwd=tmp_path,
                           capture_output=True, text=True, env={**env, "ADVMON_LOG_LEVEL": "ERROR"})
    assert quiet.returncode == 0 and "ADVMON_BUKET_SECONDS" not in quiet.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("advmon ")


def test_profile_fit_on_a_window_of_production_traffic_measures_its_baselines(tmp_path, capsys):
    import orjson

    from monitor.detect.profiles import Profile

    rng = np.random.default_rng(1)
    lines = [orjson.dumps({"event_id": str(i), "ts": 1796083200 + i, "client_id": f"c{i % 9}", "model": "m",
                           "input": {"features": (rng.random(8) * (1 if i < 600 else 5)).clip(0, 1).tolist()},
                           "prediction": {"label": str(i % 3), "confidence": 0.9}, "ground_truth": str(i % 3)})
             for i in range(1200)]
    (tmp_path / "ev.jsonl").write_bytes(b"\n".join(lines))
    assert main(["profile", "fit", str(tmp_path / "ev.jsonl"), "-o", str(tmp_path / "p.npz"),
                 "--since", "2026-12-01T00:00:00Z", "--until", str(1796083200 + 600)]) == 0
    profile = Profile.load(str(tmp_path / "p.npz"))
    rates = profile.baselines["m"]
    assert rates["error_rate"] == 0.0 and 0.0 <= rates["input_anomaly_rate"] < 0.05
    assert "m: benign baselines" in capsys.readouterr().err
    assert main(["profile", "fit", "-o", str(tmp_path / "q.npz")]) == 2  # neither a file nor a topic
