"""Realistic inference records for the throughput benchmarks: about 1.3 KB each (64 raw features, a 96-float
base64 embedding, 10 logits, ground truth on some), from the detection benchmark's digits family, not the demo.

    python3 bench/realistic.py out.jsonl [--hours 2 --rate 10]   # writes the records, prints their size
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.detect.profiles import Profile  # noqa: E402
from monitor.sim.evaluation import reference_profile  # noqa: E402
from monitor.sim.families import FAMILIES, generate  # noqa: E402


@dataclass
class Records:
    records: list[bytes]
    profile: Profile
    clients: int

    @property
    def mean_bytes(self) -> float:
        return float(np.mean([len(r) for r in self.records])) if self.records else 0.0


def realistic(hours: float = 1.0, rate: float = 10.0, clients: int = 2000) -> Records:
    """Benign traffic of ``digits-train-ref`` (no attacks) at ``rate`` events/s, with its training-data profile."""
    day = generate(FAMILIES["digits-train-ref"].scaled(hours=hours, benign_rate=rate, clients=clients, attacks=()))
    return Records(day.records, reference_profile(day), clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    made = realistic(args.hours, args.rate)
    Path(args.out).write_bytes(b"\n".join(made.records) + b"\n")
    print(f"{len(made.records):,} records, {made.mean_bytes:,.0f} bytes each on average -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
