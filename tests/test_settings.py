"""Settings: command-line options over ADVMON_* variables over defaults, one clear error for a bad value,
a warning for variables that name no setting."""

import argparse
import logging

import pytest

from monitor.cli.common import setting_option, settings_of, warn_unknown_variables
from monitor.errors import ConfigError
from monitor.settings import Settings, unknown_variables
from monitor.spec.rules import load_rules_text


def test_options_override_the_environment_which_overrides_defaults():
    parser = argparse.ArgumentParser()
    setting_option(parser, "--bootstrap", dest="kafka_bootstrap")
    setting_option(parser, "--http-port", dest="metrics_port", type=int)
    environ = {"ADVMON_KAFKA_BOOTSTRAP": "env:9092", "ADVMON_METRICS_PORT": "9400", "ADVMON_BUCKET_SECONDS": "30"}
    settings = settings_of(parser.parse_args(["--http-port", "9500"]), environ=environ)
    assert (settings.kafka_bootstrap, settings.metrics_port, settings.bucket_seconds) == ("env:9092", 9500, 30)
    assert Settings.load(environ={}).bucket_seconds == 60


def test_a_bad_value_names_its_variable_or_option():
    with pytest.raises(ConfigError, match=r"^ADVMON_BUCKET_SECONDS='abc': Input should be a valid integer"):
        Settings.load(environ={"ADVMON_BUCKET_SECONDS": "abc"})
    with pytest.raises(ConfigError, match=r"^--http-port=-1: "):
        Settings.load({"metrics_port": -1}, environ={}, option_names={"metrics_port": "--http-port"})


def test_unknown_advmon_variables_are_warned_about_but_receiver_secrets_are_not(monkeypatch, caplog):
    assert unknown_variables({"ADVMON_BUKET_SECONDS": "1", "ADVMON_RULES_DIR": "r", "PATH": "/"}) == \
        ["ADVMON_BUKET_SECONDS"]
    rules = load_rules_text("receivers: [{name: pager, type: pagerduty, key_env: ADVMON_PD_KEY}]\n"
                            "routes: [{receivers: [pager]}]")
    monkeypatch.setenv("ADVMON_PD_KEY", "k")
    monkeypatch.setenv("ADVMON_GRACE_SECOND", "5")
    with caplog.at_level(logging.WARNING, logger="advmon"):
        warn_unknown_variables(rules)
    assert "ADVMON_GRACE_SECOND is not an advmon setting" in caplog.text and "ADVMON_PD_KEY" not in caplog.text


def test_a_topic_prefix_always_ends_with_a_separator():
    from streams.topics import Topics

    topics = Topics.from_settings(Settings.load(environ={"ADVMON_TOPIC_PREFIX": "evb1"}))
    assert topics.inference_logs == "evb1.inference-logs" and topics.alerts == "evb1.alerts"
    assert Settings.load(environ={"ADVMON_TOPIC_PREFIX": "evb1-"}).topic_prefix == "evb1-"
    assert Settings.load(environ={}).topic_prefix == ""


def test_remote_matching_and_remote_scoring_go_together():
    both = Settings.load(environ={"ADVMON_REMOTE_SCORING": "true", "ADVMON_REMOTE_MATCHING": "true"}).engine_settings()
    assert both.remote_embedding_scoring and both.remote_matching
    matching = Settings.load(environ={"ADVMON_REMOTE_MATCHING": "1", "ADVMON_IDLE_SOURCE_SECONDS": "30"})
    assert matching.engine_settings().remote_matching and matching.matcher_settings().idle_source_s == 30
