"""river's drift detectors, loaded without ``river.drift``'s package import (1.3 s: it imports river's datasets,
which import scikit-learn); each detector's own module imports only ``river.base`` and ``river.stats`` (0.1 s).

The modules are registered under their real names, so a later ``import river.drift`` reuses them and the
detectors' classes are river's own (``isinstance``, pickling and ``repr`` unchanged).

>>> detector = drift_detector("PageHinkley")(min_instances=1, threshold=1.0)
>>> type(detector).__module__, type(detector).__name__
('river.drift.page_hinkley', 'PageHinkley')
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

#: class name -> the module of ``river.drift`` that defines it.
MODULES = {"ADWIN": "adwin", "KSWIN": "kswin", "PageHinkley": "page_hinkley"}


def drift_detector(name: str) -> type:
    """The river drift detector class ``name`` (one of :data:`MODULES`)."""
    return getattr(_module(f"river.drift.{MODULES[name]}"), name)


def _module(full_name: str) -> ModuleType:
    if full_name in sys.modules or "river.drift" in sys.modules:
        return importlib.import_module(full_name)
    river = importlib.util.find_spec("river")
    locations = river.submodule_search_locations if river else None
    if not locations:  # not a regular installed package: import it the ordinary way
        return importlib.import_module(full_name)
    spec = importlib.util.spec_from_file_location(full_name, f"{locations[0]}/drift/{full_name.rsplit('.', 1)[1]}.py")
    if spec is None or spec.loader is None:
        return importlib.import_module(full_name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[full_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full_name]
        raise
    return module
