"""The in-process runtime (no services): ``advmon demo`` and ``advmon replay``."""
