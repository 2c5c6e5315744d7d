from monitor.alerting.hysteresis import cooled


def test_a_key_resolves_only_after_a_full_hold_without_being_hot():
    open_alerts, last_hot = {"k": "alert"}, {"k": 0.0}
    assert cooled(open_alerts, last_hot, hot={"k"}, now=5000.0, hold=900.0) == []  # hot now: stays open
    assert cooled(open_alerts, last_hot, hot=set(), now=899.0, hold=900.0) == []
    assert cooled(open_alerts, last_hot, hot=set(), now=900.0, hold=900.0) == [("k", "alert")]
    assert open_alerts == {} and last_hot == {}  # nothing of the key is kept after it resolved
