from monitor.runtime.stall import StallWatch


def test_a_stretch_is_reported_once_it_lasts_and_then_at_intervals_and_a_new_one_starts_afresh():
    watch = StallWatch(report_after_s=120.0, every_s=60.0)
    assert watch.seconds(5.0) == 0.0 and not watch.due(500.0)  # no stretch: nothing to report
    watch.start(10.0)
    assert [t for t in range(10, 400, 10) if watch.due(float(t))] == [130, 190, 250, 310, 370]
    watch.end()
    watch.start(1000.0)
    assert watch.seconds(1050.0) == 50.0 and not watch.due(1100.0) and watch.due(1120.0)
