"""The Kafka commands: ``advmon topics create``, the daemons ``ingest``, ``alerter``, ``scorer``, ``matcher`` and
``collect``, and ``produce``."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import existing_file, profile_of, rules_of, setting_option, settings_of
from monitor.errors import InputError


def _bootstrap(parser: argparse.ArgumentParser) -> None:
    setting_option(parser, "--bootstrap", dest="kafka_bootstrap",
                   help="Kafka bootstrap servers (default ADVMON_KAFKA_BOOTSTRAP or 127.0.0.1:9092)")


def _daemon(parser: argparse.ArgumentParser) -> None:
    _bootstrap(parser)
    setting_option(parser, "--instance", dest="instance_id",
                   help="stable instance id (default ADVMON_INSTANCE_ID or the host name)")
    setting_option(parser, "--http-port", dest="metrics_port", type=int,
                   help="/metrics, /healthz, /readyz port on ADVMON_HTTP_HOST (default ADVMON_METRICS_PORT; 0 off)")


def register(commands: argparse._SubParsersAction) -> None:
    topics = commands.add_parser("topics", help="Kafka topics")
    topics_commands = topics.add_subparsers(dest="topics_command", required=True)
    create = topics_commands.add_parser("create", help="create advmon's topics (idempotent)")
    _bootstrap(create)
    setting_option(create, "--partitions", dest="input_partitions", type=int,
                   help="inference-logs partitions (default ADVMON_INPUT_PARTITIONS or 6)")
    setting_option(create, "--alerter-partitions", dest="alerter_partitions", type=int,
                   help="sli-buckets and scores partitions: 1 runs one alerter, more shard it by (model, client) "
                        "(default ADVMON_ALERTER_PARTITIONS or 1)")
    create.set_defaults(func=run_topics_create)

    ingest = commands.add_parser(
        "ingest", help="Kafka daemon: inference-logs -> engine -> sli-buckets, DLQ, suspicious"
    )
    _daemon(ingest)
    setting_option(ingest, "--profile", dest="profile_path", help="reference profile (default ADVMON_PROFILE_PATH)")
    setting_option(ingest, "--remote-scoring", dest="remote_scoring", action="store_const", const=True,
                   help="send embeddings to `advmon scorer` (default ADVMON_REMOTE_SCORING or off)")
    setting_option(ingest, "--remote-matching", dest="remote_matching", action="store_const", const=True,
                   help="send query fingerprints to `advmon matcher`, which matches every worker's queries "
                        "(default ADVMON_REMOTE_MATCHING or off: each worker matches its own)")
    ingest.set_defaults(func=run_ingest)

    matcher = commands.add_parser(
        "matcher", help="Kafka daemon: match-requests -> one query index over every ingest worker -> sli-buckets")
    _daemon(matcher)
    setting_option(matcher, "--shards", dest="matcher_shards", type=int,
                   help="shard the index by hash over this many shard processes and one reduce "
                        "(default ADVMON_MATCHER_SHARDS or 1: one matcher)")
    setting_option(matcher, "--shard", dest="matcher_shard",
                   help="with --shards above 1, this process's role: a shard 0..N-1, or reduce (the one that "
                        "decides and publishes; default ADVMON_MATCHER_SHARD)")
    matcher.set_defaults(func=run_matcher)

    scorer = commands.add_parser("scorer", help="Kafka daemon: score-requests -> embedding scores -> sli-buckets")
    _daemon(scorer)
    setting_option(scorer, "--profile", dest="profile_path",
                   help="reference profile (default ADVMON_PROFILE_PATH); required")
    setting_option(scorer, "--backend", dest="scorer_backend", choices=("auto", "numpy", "torch"),
                   help="auto: torch on CUDA when present, else numpy (default ADVMON_SCORER_BACKEND or auto)")
    scorer.set_defaults(func=run_scorer)

    alerter = commands.add_parser(
        "alerter", help="Kafka daemon (faust): sli-buckets -> rules -> alerts topic and sinks"
    )
    _daemon(alerter)
    setting_option(
        alerter, "--rules", dest="rules_dir", help="rules directory (default ADVMON_RULES_DIR or the shipped rules)"
    )
    setting_option(alerter, "--profile", dest="profile_path",
                   help="reference profile whose measured baselines relative objectives use (ADVMON_PROFILE_PATH)")
    alerter.add_argument("--alerts-out", help="also append delivered alerts as JSON Lines")
    alerter.set_defaults(func=run_alerter)

    collect = commands.add_parser(
        "collect", help="HTTP endpoint: event batches and KServe inference-logger CloudEvents -> inference-logs"
    )
    _bootstrap(collect)
    collect.add_argument("--host", default=None, help="listen address (default ADVMON_HTTP_HOST or 127.0.0.1)")
    collect.add_argument("--port", type=int, default=8080, help="listen port (default 8080)")
    collect.add_argument("--max-body-bytes", type=int, default=8 << 20, help="larger bodies get 413 (default 8 MiB)")
    collect.add_argument("--client-header", default="X-Client-Id",
                         help="the request header naming the client, forwarded by KServe's logger.metadataHeaders")
    collect.add_argument("--no-auth", action="store_true",
                         help="accept POSTs without a bearer token (default: ADVMON_COLLECT_TOKEN is required)")
    collect.set_defaults(func=run_collect)

    produce = commands.add_parser("produce", help="write inference records to Kafka (a JSON Lines file or --demo)")
    _bootstrap(produce)
    produce.add_argument("events", nargs="?", help="JSON Lines of inference events")
    produce.add_argument("--demo", action="store_true", help="the demo scenario's traffic instead of a file")
    produce.add_argument("--duration", default="3h", help="demo event time to generate")
    produce.add_argument("--seed", type=int, default=0)
    produce.add_argument("--rate", type=float, default=0.0, help="records per second (default: as fast as possible)")
    produce.set_defaults(func=run_produce)


def run_topics_create(args: argparse.Namespace) -> int:
    from monitor.cli.common import warn_unknown_variables
    from streams.topics import Topics, create_topics

    settings = settings_of(args)
    warn_unknown_variables()
    specs = Topics.from_settings(settings).specs(settings.input_partitions, settings.alerter_partitions)
    for spec, outcome in create_topics(settings.kafka_bootstrap, specs):
        print(f"{spec.name:28} {spec.partitions:3} partitions  {outcome}")
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    import asyncio

    from monitor.cli.common import warn_unknown_variables
    from monitor.telemetry.metrics import Metrics
    from streams.http import Health, serve
    from streams.ingest import IngestWorker
    from streams.transactional import run_until_signalled

    settings = settings_of(args)
    warn_unknown_variables()
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port, metrics.registry, health, settings.http_host)
    worker = IngestWorker(settings, metrics, health, profile_of(settings.profile_path))
    asyncio.run(run_until_signalled(worker))
    return 0


def run_scorer(args: argparse.Namespace) -> int:
    import asyncio

    from monitor.cli.common import warn_unknown_variables
    from monitor.telemetry.metrics import Metrics
    from streams.http import Health, serve
    from streams.scorer import ScorerWorker
    from streams.transactional import run_until_signalled

    settings = settings_of(args)
    warn_unknown_variables()
    profile = profile_of(settings.profile_path, required=True)
    assert profile is not None
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port, metrics.registry, health, settings.http_host)
    asyncio.run(run_until_signalled(ScorerWorker(settings, metrics, health, profile)))
    return 0


def run_matcher(args: argparse.Namespace) -> int:
    import asyncio

    from monitor.cli.common import warn_unknown_variables
    from monitor.telemetry.metrics import Metrics
    from streams.http import Health, serve
    from streams.match_shards import ReduceWorker, ShardWorker, matcher_role
    from streams.matcher import MatcherWorker
    from streams.transactional import run_until_signalled

    settings = settings_of(args)
    warn_unknown_variables()
    worker = {"one": MatcherWorker, "reduce": ReduceWorker, "shard": ShardWorker}[matcher_role(settings)]
    metrics, health = Metrics(), Health()
    serve(settings.metrics_port, metrics.registry, health, settings.http_host)
    asyncio.run(run_until_signalled(worker(settings, metrics, health)))
    return 0


def run_alerter(args: argparse.Namespace) -> int:
    from streams.faust_alerter import run_alerter as run

    settings = settings_of(args)
    rules = rules_of(settings)
    profile = profile_of(settings.profile_path) if settings.profile_path else None
    return run(settings, rules, alerts_out=args.alerts_out, baselines=profile.baselines if profile else None)


def run_collect(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from monitor.cli.common import warn_unknown_variables
    from monitor.errors import ConfigError
    from monitor.telemetry.metrics import Metrics
    from streams.collect import Collector, serve

    settings = settings_of(args)
    warn_unknown_variables()
    token = settings.collect_token.get_secret_value() if settings.collect_token else None
    if token is None and not args.no_auth:
        raise ConfigError("advmon collect needs ADVMON_COLLECT_TOKEN (the bearer token callers send), "
                          "or --no-auth on a trusted network")
    collector = Collector(settings, Metrics(), token, client_header=args.client_header)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(collector, args.host or settings.http_host, args.port, args.max_body_bytes, stop)

    asyncio.run(main())
    return 0


def run_produce(args: argparse.Namespace) -> int:
    from collections.abc import Iterable

    from monitor.cli.common import warn_unknown_variables
    from streams.produce import file_records, produce
    from streams.topics import Topics

    settings = settings_of(args)
    warn_unknown_variables()
    records: Iterable[bytes]
    if args.demo:
        from monitor.sim.synth import Scenario
        from monitor.spec.durations import parse_duration

        scenario = Scenario.build(seed=args.seed, duration_s=parse_duration(args.duration))
        records = (r for chunk in scenario.chunks() for r in chunk.records)
    elif args.events:
        records = file_records(existing_file(args.events))
    else:
        raise InputError("give an EVENTS.jsonl file or --demo")
    topic = Topics.from_settings(settings).inference_logs
    sent = produce(settings.kafka_bootstrap, topic, records, rate=args.rate)
    print(f"advmon: {sent} records acknowledged on {topic}", file=sys.stderr)
    return 0
