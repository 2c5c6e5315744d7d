"""``advmon profile fit``: reference statistics of clean traffic for the input and embedding scores, and the
benign rate of every SLI measured on that traffic (the baselines relative objectives use)."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import existing_file, setting_option, settings_of
from monitor.detect.profiles import COVARIANCES, DEFAULT_BANK
from monitor.errors import ConfigError, InputError


def register(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser("profile", help="scorer reference statistics")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    fit = profile_commands.add_parser("fit", help="fit reference statistics from clean traffic")
    fit.add_argument("reference", nargs="?", help="JSON Lines of clean inference events (or --topic)")
    fit.add_argument("-o", "--output", required=True)
    fit.add_argument("--since", help="only events from this time on (RFC 3339 or epoch seconds)")
    fit.add_argument("--until", help="only events before this time (RFC 3339 or epoch seconds)")
    fit.add_argument("--topic", help="read the window from this Kafka topic (e.g. inference-logs) instead of a file")
    setting_option(fit, "--bootstrap", dest="kafka_bootstrap", help="Kafka bootstrap servers, with --topic")
    fit.add_argument("--fpr", type=float, default=0.002, help="benign false-positive rate to calibrate at")
    fit.add_argument("--k", type=int, default=50, help="neighbour rank of the kNN score (in the whole reference)")
    fit.add_argument("--bank", type=int, default=DEFAULT_BANK,
                     help="reference embeddings kept for the kNN score (a uniform sample; k is scaled to it; scoring "
                          "costs this many dot products per event)")
    fit.add_argument("--covariance", choices=COVARIANCES, default="ledoit-wolf",
                     help="shrinkage estimator of the shared covariance (mcd: robust to outliers in the reference)")
    fit.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from monitor.detect.profile_fit import fit_profile, fit_profile_file
    from monitor.spec.silences import epoch

    try:
        since = epoch(_number_or_text(args.since)) if args.since else None
        until = epoch(_number_or_text(args.until)) if args.until else None
    except ValueError as exc:
        raise ConfigError(f"--since/--until: {exc}") from None
    if args.topic:
        if since is None or until is None:
            raise ConfigError("--topic needs --since and --until (the window of production traffic to fit on)")
        from streams.window import read_window

        settings = settings_of(args)
        profile = fit_profile(read_window(settings.kafka_bootstrap, args.topic, since), fpr=args.fpr, k=args.k,
                              since=since, until=until, name=args.topic, covariance=args.covariance,
                              bank_size=args.bank)
    elif args.reference:
        profile = fit_profile_file(existing_file(args.reference), fpr=args.fpr, k=args.k, since=since, until=until,
                                   covariance=args.covariance, bank_size=args.bank)
    else:
        raise InputError("give a JSON Lines file of clean events, or --topic with --since and --until")
    profile.save(args.output)
    for key, model in sorted(profile.models.items()):
        print(f"{key}: dim {model.dim}, {model.means.shape[0]} classes, thresholds "
              + ", ".join(f"{n}={t:.4g}" for n, t in zip(("mahalanobis", "knn", "energy"), model.thresholds,
                                                          strict=True)), file=sys.stderr)
    for model_name, rates in sorted(profile.baselines.items()):
        print(f"{model_name}: benign baselines " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(rates.items())),
              file=sys.stderr)
    print(f"advmon: wrote {args.output}", file=sys.stderr)
    return 0


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value
