"""Black-box attacks (ART: HopSkipJump, Boundary, Square) against the digits model, as query streams
through the fingerprint index: queries until the first flag, share flagged, and the benign
false-positive rate on the same index.

    python3 bench/blackbox.py [--images 5] [--budget 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.sim.attacks import ATTACKS, queries_until_detection  # noqa: E402
from monitor.sim.toymodel import DigitsModel  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--budget", type=int, default=1000, help="queries per attack at most")
    parser.add_argument("--benign", type=int, default=5000, help="benign queries before each attack")
    args = parser.parse_args()
    started = time.perf_counter()
    model = DigitsModel.train(hidden=64, seed=0)
    results, fpr = queries_until_detection(model, images=args.images, budget=args.budget, benign=args.benign)
    print(f"digits MLP (test accuracy {model.accuracy():.3f}); {args.benign} benign queries before each attack; "
          f"benign false-positive rate {fpr:.2%}")
    print(f"{'attack':12} {'runs':>4} {'succeeded':>9} {'queries (median)':>16} {'first flag (median, max)':>25} "
          f"{'share flagged':>13}")
    for attack in ATTACKS:
        mine = [r for r in results if r.attack == attack]
        firsts = sorted(r.first_flagged for r in mine if r.first_flagged is not None)
        missed = sum(r.first_flagged is None for r in mine)
        first = f"{firsts[len(firsts) // 2]}, {firsts[-1]}" if firsts else "never"
        print(
            f"{attack:12} {len(mine):4} {sum(r.succeeded for r in mine):9} "
            f"{sorted(r.queries for r in mine)[len(mine) // 2]:16} "
            f"{first + (f' ({missed} missed)' if missed else ''):>25} "
            f"{sum(r.flagged_share for r in mine) / len(mine):13.0%}"
        )
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
