"""river's drift detectors without river.drift's package import: the same classes, a fraction of the start-up."""

import subprocess
import sys

import pytest

from monitor.alerting.river_drift import MODULES, drift_detector

PROBE = """
import sys, time
started = time.perf_counter()
from monitor.alerting.river_drift import drift_detector
detector = drift_detector("PageHinkley")(min_instances=1, threshold=1.0)
print(time.perf_counter() - started, "sklearn" in sys.modules, "river.drift" in sys.modules)
import river.drift
print(type(detector) is river.drift.PageHinkley, river.drift.PageHinkley.__module__)
"""


def test_a_detector_loads_without_river_drift_or_scikit_learn_and_stays_rivers_class():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split("\n")
    seconds, sklearn_loaded, package_loaded = out[0].split()
    assert (sklearn_loaded, package_loaded) == ("False", "False"), out
    assert out[1] == "True river.drift.page_hinkley", out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_detector_is_rivers_own(name):
    from river import drift

    assert drift_detector(name) is getattr(drift, name)
