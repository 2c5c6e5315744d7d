"""advmon: watch ML inference traffic for adversarial examples and attacks.

The package is split into pure domain code (events, detectors, SLIs, alert rules)
that takes time as a parameter, and thin adapters (sinks, runtimes, CLI) that do I/O.
"""

__version__ = "0.1.0"
