"""The local broker script: Maven's output only when it fails, without terminal escape codes."""

import os
import stat

from streams import broker
from streams.broker import main


def fake_mvn(tmp_path, body: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mvn"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_a_failing_maven_is_one_message_without_escape_codes(tmp_path, monkeypatch, capsys):
    failing = "printf '\\033[0m\\033[0m[ERROR] Could not find artifact kafka\\n'; exit 1\n"
    monkeypatch.setenv("PATH", fake_mvn(tmp_path, failing))
    monkeypatch.setattr(broker.resolve_kafka, "__defaults__", (tmp_path,))  # resolve into tmp_path
    assert main(["resolve"]) == 1
    err = capsys.readouterr().err
    assert "Maven could not resolve Apache Kafka (exit 1)" in err and "Could not find artifact kafka" in err
    assert "\x1b" not in err


def test_a_succeeding_maven_prints_only_the_folder(tmp_path, monkeypatch, capsys):
    succeeding = "printf '\\033[0m\\033[0m'; mkdir -p lib && touch lib/kafka_2.13-4.2.0.jar\n"
    monkeypatch.setenv("PATH", fake_mvn(tmp_path, succeeding))
    monkeypatch.setattr(broker.resolve_kafka, "__defaults__", (tmp_path,))
    assert main(["resolve"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "lib") and "\x1b" not in captured.out + captured.err
