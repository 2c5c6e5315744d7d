"""``advmon profile fit``: reference statistics of clean traffic for the input and embedding scores."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import existing_file


def register(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser("profile", help="scorer reference statistics")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    fit = profile_commands.add_parser("fit", help="fit reference statistics from clean traffic")
    fit.add_argument("reference", help="JSON Lines of clean inference events")
    fit.add_argument("-o", "--output", required=True)
    fit.add_argument("--fpr", type=float, default=0.002, help="benign false-positive rate to calibrate at")
    fit.add_argument("--k", type=int, default=50, help="neighbour rank of the kNN score")
    fit.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from monitor.detect.profile_fit import fit_profile_file

    profile = fit_profile_file(existing_file(args.reference), fpr=args.fpr, k=args.k)
    profile.save(args.output)
    for key, model in sorted(profile.models.items()):
        print(f"{key}: dim {model.dim}, {model.means.shape[0]} classes, thresholds "
              + ", ".join(f"{n}={t:.4g}" for n, t in zip(("mahalanobis", "knn", "energy"), model.thresholds,
                                                          strict=True)), file=sys.stderr)
    print(f"advmon: wrote {args.output}", file=sys.stderr)
    return 0
