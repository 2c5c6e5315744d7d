"""``advmon rules check | render | import-openslo``: validate a rules directory; export Prometheus rules (a rules
file or a prometheus-operator PrometheusRule), Alertmanager inhibitions and OpenSLO; import OpenSLO SLOs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.spec.rules import load_rules


def register(commands: argparse._SubParsersAction) -> None:
    rules = commands.add_parser("rules", help="SLO and alert rules")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_commands.add_parser("check", help="validate a rules directory and show the derived tiers")
    check.add_argument("directory")
    check.add_argument("--profile", help="a profile from `advmon profile fit`: resolve objectives relative to its "
                                         "measured baselines and warn where one is tighter than benign traffic")
    check.set_defaults(func=run_check)
    render = rules_commands.add_parser("render", help="export the SLOs as Prometheus rules or OpenSLO")
    render.add_argument("directory")
    render.add_argument("--format", choices=("prometheus", "prometheusrule", "openslo"), default="prometheus",
                        help="prometheus: a rules file (model-scoped SLOs, Sloth's record names); prometheusrule: "
                             "the same as a prometheus-operator PrometheusRule; openslo: every SLO as OpenSLO v1")
    render.add_argument("-o", "--output", help="write here (default stdout)")
    render.add_argument("--inhibit-output", help="also write Alertmanager inhibit_rules (page mutes ticket) here")
    render.set_defaults(func=run_render)
    imports = rules_commands.add_parser("import-openslo", help="OpenSLO v1 SLO documents -> an advmon rules file")
    imports.add_argument("file", help="YAML with one or more OpenSLO documents (other kinds are skipped)")
    imports.add_argument("-o", "--output", help="write the rules file here (default stdout)")
    imports.set_defaults(func=run_import_openslo)


def run_check(args: argparse.Namespace) -> int:
    from monitor.cli.common import profile_of

    rules = load_rules(args.directory)
    profile = profile_of(args.profile, required=True) if args.profile else None
    warnings = 0
    for slo in rules.slos:
        tiers = ", ".join(f"{t.severity} {t.names[0]}/{t.names[1]} x{t.factor:.3g}" for t in slo.tiers)
        relative = f" (max_rate {slo.max_rate})" if slo.max_rate else ""
        print(f"slo {slo.name}: {slo.sli} per {slo.scope}, objective {slo.objective}{relative}: {tiers}")
        for model, rates in sorted((profile.baselines if profile else {}).items()):
            baseline = rates.get(slo.sli)
            if baseline is None:
                continue
            allowed = slo.allowed_rate(baseline)
            print(f"  model {model}: benign {slo.sli} {baseline:.3%} measured; {allowed:.3%} allowed")
            if allowed <= baseline:
                warnings += 1
                print(f"  WARNING: {slo.name} allows {allowed:.3%} for model {model}, no more than the {baseline:.3%} "
                      "its benign traffic already shows: it would burn budget without an attack", file=sys.stderr)
    for client_rule in rules.clients:
        floors = ", ".join(f"{name} AUC>={s.min_effect}" for name, s in client_rule.statistics.items())
        budget = f"{client_rule.false_pages_per_month:g} false page/month at {client_rule.active_clients:,} clients"
        print(f"clients {client_rule.name}: z >= {client_rule.z_threshold(60):.2f} ({budget}, 1-minute buckets) "
              f"and {floors} -> {client_rule.severity}")
    for group in rules.groups:
        print(f"groups {group.name}: >= {group.min_keys} keys, >= {group.min_cross_share:.0%} of queries matching "
              f"other keys', >= {group.min_fresh_share:.0%} first seen within {group.fresh_within // 60} min "
              f"-> {group.severity}")
    for drift in rules.drift:
        print(f"drift {drift.name}: {drift.detector} on {drift.series} -> {drift.severity}")
    for no_data in rules.no_data:
        print(f"no-data {no_data.name}: a model silent for {no_data.after // 60} min -> {no_data.severity}")
    for receiver in rules.receivers:
        secrets = [v for v in (receiver.key_env, receiver.url_env, receiver.hmac_secret_env) if v]
        print(
            f"receiver {receiver.name}: {receiver.type}" + (f", secrets from ${', $'.join(secrets)}" if secrets else "")
        )
    print(f"ok: {len(rules.slos)} SLOs, {len(rules.clients)} client rules, {len(rules.groups)} group rules, "
          f"{len(rules.drift)} drift rules, {len(rules.receivers)} receivers, {len(rules.routes)} routes"
          + (f"; {warnings} warnings" if warnings else ""))
    return 0


def run_render(args: argparse.Namespace) -> int:
    from monitor.alerting.promrules import render_inhibit_rules, render_prometheus_rules, skipped_slos
    from monitor.spec.yaml_dump import dump_yaml

    rules = load_rules(args.directory)
    header = ("# Generated by `advmon rules render` from the advmon rules; do not edit by hand.\n"
              + "".join(f"# per-client SLO {name} is evaluated by the advmon alerter only (client ids are not labels)\n"
                        for name in skipped_slos(rules))
              + "".join(f"# {slo.name}: max_rate {slo.max_rate} renders as its objective {slo.objective} (Prometheus "
                        "does not know the profile's baselines)\n" for slo in rules.slos if slo.max_rate))
    if args.format == "openslo":
        from monitor.spec.openslo import export_openslo

        text = "# Generated by `advmon rules render --format openslo`; `advmon rules import-openslo` reads it back.\n"
        text += "".join("---\n" + dump_yaml(document) for document in export_openslo(rules))
    elif args.format == "prometheusrule":
        from monitor.alerting.promrules import render_prometheus_rule_resource

        text = header + dump_yaml(render_prometheus_rule_resource(rules))
    else:
        text = header + dump_yaml(render_prometheus_rules(rules))
    _write(text, args.output)
    if args.inhibit_output:
        Path(args.inhibit_output).write_text(dump_yaml({"inhibit_rules": render_inhibit_rules()}))
    return 0


def run_import_openslo(args: argparse.Namespace) -> int:
    import yaml

    from monitor.errors import RulesError
    from monitor.spec.openslo import import_openslo
    from monitor.spec.rules import load_rules_text
    from monitor.spec.yaml_dump import dump_yaml

    try:
        documents = list(yaml.safe_load_all(Path(args.file).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"{args.file}: {exc}") from None
    slos = import_openslo(documents)
    if not slos:
        raise RulesError(f"{args.file}: no OpenSLO v1 SLO documents")
    text = f"# Imported by `advmon rules import-openslo` from {Path(args.file).name}.\n" + dump_yaml({"slos": slos})
    load_rules_text(text, name=args.file)  # the file it writes is one advmon loads
    _write(text, args.output)
    return 0


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text)
        print(f"advmon: wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
