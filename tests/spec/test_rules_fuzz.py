"""The rules loader fuzzed with hypothesis: it either loads or raises ``RulesError`` with a message,
never another exception."""

import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.spec.rules import Rules, RulesError, load_rules_text

scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["1h", "5m", "30d", "0s", "-1h", "page", "ticket", "adwin",
                                                     "page_hinkley", "kswin", "model", "client", "stdout",
                                                     "input_anomaly_rate", "label_entropy", "query_rate"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def section_items(keys):
    return st.lists(st.dictionaries(st.sampled_from(keys), values, max_size=len(keys)), max_size=3)


rules_documents = st.fixed_dictionaries({}, optional={
    "slos": section_items(["name", "sli", "scope", "objective", "period", "min_events", "severities",
                           "resolve_after", "summary", "runbook", "windows"]),
    "drift": section_items(["name", "series", "detector", "delta", "threshold", "alpha", "window_size", "stat_size",
                            "min_events", "grace_points", "severity", "resolve_after"]),
    "no_data": section_items(["name", "after", "severity", "models"]),
    "windows": section_items(["severity", "long", "short", "budget_fraction"]),
    "receivers": section_items(["name", "type", "url", "url_env", "key_env", "repo", "project", "hmac_secret_env"]),
    "routes": section_items(["match", "receivers", "group_by", "repeat_interval"]),
    "silences": section_items(["matchers", "starts", "ends", "comment"]),
    "maintenance": section_items(["matchers", "weekday", "start", "duration"]),
    "extra": values,
})


def load_or_explain(text: str):
    try:
        return load_rules_text(text, name="fuzz.yaml")
    except RulesError as exc:
        assert str(exc).strip(), "a refusal must say why"
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules_documents)
def test_rules_loader_loads_or_explains(document):
    text = yaml.safe_dump(document, allow_unicode=True)
    rules = load_or_explain(text)
    assert rules is None or isinstance(rules, Rules)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "{}[]:-#&*!|>'\"%@`\u00e9\u2028\ufeff", max_size=200))
def test_rules_loader_survives_arbitrary_text(text):
    load_or_explain(text)
