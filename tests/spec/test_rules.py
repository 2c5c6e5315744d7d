"""Rules files: validation with file and line, derived tiers, refusal of tiers that can never fire."""

import pytest

from monitor.spec.rules import RulesError, default_rules_dir, load_rules, load_rules_text


def test_shipped_rules_load():
    rules = load_rules(default_rules_dir())
    assert {s.name for s in rules.slos} >= {"profile-mismatch", "query-attack"}
    assert [c.name for c in rules.clients] == ["client-standout"] and [g.name for g in rules.groups] == ["sybil-group"]


def test_tier_that_can_never_fire_is_refused_with_line(tmp_path):
    (tmp_path / "a.yaml").write_text("slos:\n  - name: x\n    sli: detector_miss_rate\n    objective: 0.9\n")
    with pytest.raises(RulesError, match=r"a.yaml:2: slos.0: .*factor 14.4.*can never fire"):
        load_rules(tmp_path)


def test_unknown_key_names_file_and_line(tmp_path):
    (tmp_path / "a.yaml").write_text("slos:\n  - name: x\n    sli: error_rate\n    objective: 0.99\n    objectve: 1\n")
    with pytest.raises(RulesError, match=r"a.yaml:5: slos.0.objectve: Extra inputs are not permitted"):
        load_rules(tmp_path)


def test_unknown_sli_and_bad_duration():
    with pytest.raises(RulesError, match="unknown sli 'nope'"):
        load_rules_text("slos: [{name: x, sli: nope, objective: 0.9}]")
    with pytest.raises(RulesError, match="must be a duration"):
        load_rules_text("slos: [{name: x, sli: error_rate, objective: 0.99, period: soon}]")


def test_factors_follow_the_period():
    rules = load_rules_text("slos: [{name: x, sli: error_rate, objective: 0.999, period: 7d, severities: [page]}]")
    assert [round(t.factor, 3) for t in rules.slos[0].tiers] == [round(0.02 * 168, 3), round(0.05 * 168 / 6, 3)]


def test_duplicate_names_rejected():
    with pytest.raises(RulesError, match="repeated: x"):
        load_rules_text(
            "slos: [{name: x, sli: error_rate, objective: 0.99}, {name: x, sli: error_rate, objective: 0.99}]"
        )
