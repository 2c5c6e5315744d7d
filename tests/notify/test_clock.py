from monitor.notify.clock import FlushClock

QUIET = float("-inf")


def test_group_waits_end_after_traffic_stops():
    clock = FlushClock()
    assert clock.now(QUIET, wall=0.0) is None
    for wall, mark in ((0.0, 100.0), (5.0, 160.0), (10.0, 220.0)):  # a replay: event time runs ahead of the wall
        assert clock.now(mark, wall) == mark
    assert clock.now(QUIET, wall=40.0) == 250.0  # then quiet: 30 s later, a 30 s group_wait is over


def test_event_time_never_goes_back():
    clock = FlushClock()
    clock.now(100.0, wall=0.0)
    seen = [clock.now(mark, wall) for wall, mark in ((1.0, 90.0), (2.0, QUIET), (3.0, 95.0), (4.0, 200.0))]
    assert seen == sorted(seen) == [100.0, 101.0, 101.0, 200.0]
