"""The ``advmon`` command line: demo, replay, profile fit, rules check."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from monitor.rules import Rules, RulesError, default_rules_dir, load_rules

log = logging.getLogger("advmon")


def _load_rules(directory: str | None) -> Rules:
    """``--rules``, else ADVMON_RULES_DIR, else the shipped ``rules/``."""
    from monitor.config import Settings

    directory = directory or Settings().rules_dir
    path = Path(directory) if directory else default_rules_dir()
    if not path.is_dir():
        raise SystemExit(f"advmon: rules directory {path} does not exist (set --rules or ADVMON_RULES_DIR)")
    return load_rules(path)


def _serve_metrics(port: int, registry) -> None:
    if not port:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise SystemExit(f"advmon: cannot serve /metrics on 127.0.0.1:{port}: {exc} (use --metrics-port 0 to disable)")
    print(f"advmon: serving Prometheus metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.config import Settings
    from monitor.demo import run_demo
    from monitor.rules import parse_duration

    settings = Settings()
    return run_demo(
        settings=settings, rules=_load_rules(args.rules), duration_s=parse_duration(args.duration), seed=args.seed,
        forever=args.forever, speed=args.speed, metrics_port=settings.metrics_port if args.metrics_port is None
        else args.metrics_port, serve_metrics=_serve_metrics, events_out=args.events_out,
        profile_out=args.profile_out, alerts_out=args.alerts_out, progress=not args.no_progress,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    from monitor.config import Settings
    from monitor.replay import replay

    if not Path(args.events).is_file():
        raise SystemExit(f"advmon replay: {args.events}: no such file")
    settings = Settings()
    summary = replay(
        args.events, settings=settings, rules=_load_rules(args.rules), profile_path=args.profile,
        alerts_out=args.alerts_out, dlq_out=args.dlq_out, batch_size=args.batch_size or settings.batch_size,
    )
    print(summary, file=sys.stderr)
    return 0


def cmd_profile_fit(args: argparse.Namespace) -> int:
    from monitor.profile_fit import fit_profile_file

    profile = fit_profile_file(args.reference, fpr=args.fpr, k=args.k)
    profile.save(args.output)
    for key, model in sorted(profile.models.items()):
        print(f"{key}: dim {model.dim}, {model.means.shape[0]} classes, thresholds "
              + ", ".join(f"{n}={t:.4g}" for n, t in zip(("mahalanobis", "knn", "energy"), model.thresholds)),
              file=sys.stderr)
    print(f"advmon: wrote {args.output}", file=sys.stderr)
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    rules = load_rules(args.directory)
    for slo in rules.slos:
        tiers = ", ".join(f"{t.severity} {t.names[0]}/{t.names[1]} x{t.factor:.3g}" for t in slo.tiers)
        print(f"slo {slo.name}: {slo.sli} per {slo.scope}, objective {slo.objective}: {tiers}")
    for rule in rules.drift:
        print(f"drift {rule.name}: {rule.detector} on {rule.series} -> {rule.severity}")
    for receiver in rules.receivers:
        secrets = [v for v in (receiver.key_env, receiver.url_env, receiver.hmac_secret_env) if v]
        print(f"receiver {receiver.name}: {receiver.type}" + (f", secrets from ${', $'.join(secrets)}" if secrets else ""))
    print(f"ok: {len(rules.slos)} SLOs, {len(rules.drift)} drift rules, {len(rules.receivers)} receivers, "
          f"{len(rules.routes)} routes")
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from monitor.config import Settings
    from streams.topics import Topics, create_topics

    settings = _settings(args)
    specs = Topics.from_settings(settings).specs(args.partitions or settings.input_partitions)
    for spec, outcome in create_topics(settings.kafka_bootstrap, specs):
        print(f"{spec.name:28} {spec.partitions:3} partitions  {outcome}")
    return 0


def _settings(args: argparse.Namespace):
    from monitor.config import Settings

    overrides = {k: v for k, v in (("kafka_bootstrap", getattr(args, "bootstrap", None)),
                                   ("instance_id", getattr(args, "instance", None)),
                                   ("profile_path", getattr(args, "profile", None)),
                                   ("remote_scoring", getattr(args, "remote_scoring", None))) if v}
    return Settings(**overrides)


def _load_profile(path: str | None):
    from monitor.scoring import Profile

    if not path:
        log.warning("no reference profile (--profile / ADVMON_PROFILE_PATH): input anomaly scores are off")
        return None
    if not Path(path).is_file():
        raise SystemExit(f"advmon: profile {path}: no such file (create one with `advmon profile fit`)")
    return Profile.load(path)


def cmd_ingest(args: argparse.Namespace) -> int:
    import asyncio

    from monitor.metrics import Metrics
    from streams.http import Health, serve
    from streams.ingest import IngestWorker
    from streams.transactional import run_until_signalled

    settings = _settings(args)
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port if args.http_port is None else args.http_port, metrics.registry, health)
    worker = IngestWorker(settings, metrics, health, _load_profile(settings.profile_path))
    asyncio.run(run_until_signalled(worker))
    return 0


def cmd_scorer(args: argparse.Namespace) -> int:
    import asyncio

    from monitor.metrics import Metrics
    from streams.http import Health, serve
    from streams.scorer import ScorerWorker
    from streams.transactional import run_until_signalled

    settings = _settings(args)
    profile = _load_profile(settings.profile_path)
    if profile is None:
        raise SystemExit("advmon scorer: a reference profile is required (--profile or ADVMON_PROFILE_PATH)")
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port if args.http_port is None else args.http_port, metrics.registry, health)
    asyncio.run(run_until_signalled(ScorerWorker(settings, metrics, health, profile)))
    return 0


def cmd_alerter(args: argparse.Namespace) -> int:
    from streams.alerter_app import run_alerter

    settings = _settings(args)
    return run_alerter(settings, _load_rules(args.rules), http_port=args.http_port,
                       alerts_out=args.alerts_out)


def cmd_produce(args: argparse.Namespace) -> int:
    from streams.produce import file_records, produce
    from streams.topics import Topics

    settings = _settings(args)
    if args.demo:
        from monitor.synth import Scenario
        from monitor.rules import parse_duration

        scenario = Scenario.build(seed=args.seed, duration_s=parse_duration(args.duration))
        records = (r for chunk in scenario.chunks() for r in chunk.records)
    elif args.events:
        if not Path(args.events).is_file():
            raise SystemExit(f"advmon produce: {args.events}: no such file")
        records = file_records(args.events)
    else:
        raise SystemExit("advmon produce: give an EVENTS.jsonl file or --demo")
    topic = Topics.from_settings(settings).inference_logs
    sent = produce(settings.kafka_bootstrap, topic, records, rate=args.rate)
    print(f"advmon: {sent} records acknowledged on {topic}", file=sys.stderr)
    return 0


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default ADVMON_KAFKA_BOOTSTRAP or 127.0.0.1:9092)")


def _daemon_options(parser: argparse.ArgumentParser, profile: str | None = None) -> None:
    _kafka_options(parser)
    parser.add_argument("--instance", help="stable instance id (default ADVMON_INSTANCE_ID or the host name)")
    parser.add_argument("--http-port", type=int, default=None,
                        help="/metrics, /healthz, /readyz port on ADVMON_HTTP_HOST (default ADVMON_METRICS_PORT; 0 off)")
    if profile:
        parser.add_argument("--profile", help=profile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advmon", description="Watch ML inference traffic for adversarial attacks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="synthetic traffic with attacks, in-process; prints alerts, serves /metrics")
    demo.add_argument("--duration", default="3h", help="event time to simulate per cycle (default 3h)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--forever", action="store_true", help="repeat the scenario until interrupted")
    demo.add_argument("--speed", type=float, default=None,
                      help="event-time seconds per wall second (default: as fast as possible; 60 with --forever)")
    demo.add_argument("--metrics-port", type=int, default=None, help="0 disables (default ADVMON_METRICS_PORT or 9310)")
    demo.add_argument("--rules", help="rules directory (default: the shipped rules/)")
    demo.add_argument("--events-out", help="also write the generated events as JSON Lines (input for replay)")
    demo.add_argument("--profile-out", help="also write the reference profile the demo fitted")
    demo.add_argument("--alerts-out", help="also write alerts as JSON Lines")
    demo.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    demo.set_defaults(func=cmd_demo)

    replay = commands.add_parser("replay", help="process a JSON Lines file of events in event time")
    replay.add_argument("events")
    replay.add_argument("--rules", help="rules directory (default: the shipped rules/)")
    replay.add_argument("--profile", help="reference profile from `advmon profile fit` (enables input anomaly scores)")
    replay.add_argument("--alerts-out", help="write alerts as JSON Lines (the alert contract)")
    replay.add_argument("--dlq-out", default="dead-letters.jsonl",
                        help="write rejected lines with their reason (default dead-letters.jsonl, only if any)")
    replay.add_argument("--batch-size", type=int, default=None)
    replay.set_defaults(func=cmd_replay)

    profile = commands.add_parser("profile", help="scorer reference statistics")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    fit = profile_commands.add_parser("fit", help="fit reference statistics from clean traffic")
    fit.add_argument("reference", help="JSON Lines of clean inference events")
    fit.add_argument("-o", "--output", required=True)
    fit.add_argument("--fpr", type=float, default=0.002, help="benign false-positive rate to calibrate at")
    fit.add_argument("--k", type=int, default=50, help="neighbour rank of the kNN score")
    fit.set_defaults(func=cmd_profile_fit)

    rules = commands.add_parser("rules", help="SLO and alert rules")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_commands.add_parser("check", help="validate a rules directory and show the derived tiers")
    check.add_argument("directory")
    check.set_defaults(func=cmd_rules_check)

    topics = commands.add_parser("topics", help="Kafka topics")
    topics_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_commands.add_parser("create", help="create advmon's topics (idempotent)")
    _kafka_options(create)
    create.add_argument("--partitions", type=int, help="inference-logs partitions (default ADVMON_INPUT_PARTITIONS or 6)")
    create.set_defaults(func=cmd_topics_create)

    ingest = commands.add_parser("ingest", help="Kafka daemon: inference-logs -> engine -> sli-buckets, DLQ, suspicious")
    _daemon_options(ingest, profile="reference profile (default ADVMON_PROFILE_PATH)")
    ingest.add_argument("--remote-scoring", action="store_true", default=None,
                        help="send embeddings to `advmon scorer` (default ADVMON_REMOTE_SCORING or off)")
    ingest.set_defaults(func=cmd_ingest)

    scorer = commands.add_parser("scorer", help="Kafka daemon: score-requests -> embedding scores -> sli-buckets")
    _daemon_options(scorer, profile="reference profile (default ADVMON_PROFILE_PATH); required")
    scorer.set_defaults(func=cmd_scorer)

    alerter = commands.add_parser("alerter", help="Kafka daemon (faust): sli-buckets -> rules -> alerts topic and sinks")
    _daemon_options(alerter)
    alerter.add_argument("--rules", help="rules directory (default ADVMON_RULES_DIR or the shipped rules/)")
    alerter.add_argument("--alerts-out", help="also append delivered alerts as JSON Lines")
    alerter.set_defaults(func=cmd_alerter)

    produce = commands.add_parser("produce", help="write inference records to Kafka (a JSON Lines file or --demo)")
    _kafka_options(produce)
    produce.add_argument("events", nargs="?", help="JSON Lines of inference events")
    produce.add_argument("--demo", action="store_true", help="the demo scenario's traffic instead of a file")
    produce.add_argument("--duration", default="3h", help="demo event time to generate")
    produce.add_argument("--seed", type=int, default=0)
    produce.add_argument("--rate", type=float, default=0.0, help="records per second (default: as fast as possible)")
    produce.set_defaults(func=cmd_produce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka", "faust", "mode"):  # client chatter; their warnings still show
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except RulesError as exc:
        print(f"advmon: invalid rules:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("advmon: interrupted", file=sys.stderr)
        return 130
