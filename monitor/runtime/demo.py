"""``advmon demo``: the synthetic scenario through the in-process runtime, with a summary at the end."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from monitor.contracts.alerts import Alert
from monitor.notify.sinks.console import ConsoleSink, format_ts
from monitor.notify.sinks.jsonl import JsonlSink
from monitor.runtime.inprocess import InProcessRuntime
from monitor.settings import Settings
from monitor.sim.synth import Phase, Scenario
from monitor.spec.rules import Rules


def detection_of(phase: Phase, start_ts: float, alerts: list[Alert]) -> Alert | None:
    """The first firing alert that names the phase's model (and client, for per-client SLOs)."""
    begin = start_ts + phase.start_s
    return next((a for a in alerts if phase.explains(a) and a.fired_at >= begin), None)


def summarize(scenario: Scenario, alerts: list[Alert], stats, wall_s: float) -> str:
    lines = [f"\nadvmon demo: {stats.events:,} events in {wall_s:.1f} s ({stats.events / max(wall_s, 1e-9):,.0f}/s), "
             f"{stats.dead} dead-lettered, {stats.suspicious:,} flagged, "
             f"{sum(a.status == 'firing' for a in alerts)} alerts fired",
             "attack        starts (event time)    detected by                               time to detect"]
    explained: set[str] = set()
    for phase in scenario.phases:
        found = detection_of(phase, scenario.start_ts, alerts)
        begin = format_ts(scenario.start_ts + phase.start_s)
        if found is None:
            lines.append(f"{phase.name:13} {begin}   NOT DETECTED")
            continue
        explained.update(a.alert_id for a in alerts if phase.explains(a))
        who = f"{found.slo}/{found.severity}" + (f" ({found.client_id})" if found.client_id else "")
        lines.append(f"{phase.name:13} {begin}   {who:41} {found.fired_at - scenario.start_ts - phase.start_s:6.0f} s"
                     f" after start (first offending event -> alert: {found.time_to_detect_s:.0f} s)")
    others = [a for a in alerts if a.status == "firing" and a.alert_id not in explained]
    if others:
        lines.append(f"other alerts ({len(others)}; canary and benign-traffic findings):")
        lines += [f"  {format_ts(a.fired_at)} {a.slo}/{a.severity} model={a.model}"
                  + (f" client={a.client_id}" if a.client_id else "") for a in others]
    return "\n".join(lines)


def run_demo(settings: Settings, rules: Rules, duration_s: float, seed: int, forever: bool, speed: float | None,
             serve: Callable[[CollectorRegistry], None], events_out: str | None = None,
             profile_out: str | None = None, alerts_out: str | None = None, progress: bool = True) -> int:
    print("advmon demo: training digit models and fitting the reference profile...", file=sys.stderr)
    scenario = Scenario.build(seed=seed, duration_s=duration_s)
    profile = scenario.reference_profile()
    if profile_out:
        profile.save(profile_out)
    alerts_file = JsonlSink(alerts_out) if alerts_out else None
    runtime = InProcessRuntime.build(settings, rules, sinks=[ConsoleSink()], profile=profile,
                                     on_alerts=alerts_file.write if alerts_file else (lambda a: None))
    serve(runtime.metrics.registry)
    speed = speed if speed is not None else (60.0 if forever else 0.0)
    events_file = open(events_out, "wb") if events_out else None
    started = time.perf_counter()
    cycle = 0
    try:
        while True:
            _run_cycle(scenario, runtime, speed, events_file, progress, cycle)
            if not forever:
                break
            cycle += 1
            scenario.start_ts += scenario.duration_s
            scenario.seed += 1  # fresh traffic: a replayed cycle would be all exact duplicates
        runtime.finish()
    finally:
        if events_file:
            events_file.close()
        if alerts_file:
            alerts_file.close()
    if progress:
        print(file=sys.stderr)
    print(summarize(scenario, runtime.stats.alerts, runtime.stats, time.perf_counter() - started))
    return 0


def _run_cycle(scenario: Scenario, runtime: InProcessRuntime, speed: float, events_file, progress: bool,
               cycle: int) -> None:
    wall_start = time.perf_counter()
    for chunk in scenario.chunks(chunk_s=60.0):
        if events_file:
            events_file.writelines(r + b"\n" for r in chunk.records)
        runtime.feed(chunk.records)
        if speed > 0:
            due = (chunk.end_ts - scenario.start_ts) / speed
            time.sleep(max(0.0, due - (time.perf_counter() - wall_start)))
        if progress:
            done = (chunk.end_ts - scenario.start_ts) / scenario.duration_s
            stats = runtime.stats
            print(f"\r[cycle {cycle} {done:4.0%}] {format_ts(chunk.end_ts)} | {stats.events:,} events | "
                  f"{stats.dead} dead | {len(runtime.alerter.firing)} firing  ", end="", file=sys.stderr, flush=True)
