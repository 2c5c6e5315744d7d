"""Score a day of alerts against what really happened: false pages and tickets per 24 h of benign traffic,
time and queries to detect each attack, per-event AUROC and TPR of every detector signal.

A page is explained when it names a key of an attack (as its client, or among the keys its evidence
lists), or when it is model-scoped and fires while an attack on that model runs (up to an hour after).
A ticket is explained by the population-wide change once that began, or by an attack as above.

>>> from monitor.contracts.alerts import Alert
>>> truth = {"probe": {"keys": ["k1"], "start": 100.0, "end": 400.0, "queries": 50}}
>>> page = Alert.firing(rule="x/page", slo="x", severity="page", model="m", client_id="k1", sli="s", fired_at=220.0,
...                     summary="s")
>>> noise = Alert.firing(rule="x/page", slo="x", severity="page", model="m", client_id="k9", sli="s",
...                      fired_at=900.0, summary="s")
>>> report = score_alerts([page, noise], truth, query_times={"probe": np.linspace(100, 400, 50)},
...                       hours=24.0, change_start=None)
>>> report.false_pages, report.detections["probe"].delay_s, report.detections["probe"].queries
(1, 120.0, 20)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.contracts.alerts import Alert
from monitor.detect.engine import BatchResult, EventSignals
from monitor.detect.matcher import QueryVerdicts
from monitor.detect.profile_fit import fit_profile
from monitor.detect.profiles import ModelProfile, Profile
from monitor.notify.sinks import Sink
from monitor.runtime.inprocess import InProcessRuntime
from monitor.settings import Settings
from monitor.sim.families import DAY_START, Day, chunks
from monitor.spec.rules import Rules

AFTER_ATTACK_S = 3600.0  # a model-scoped alert this long after an attack ended still counts as about it


@dataclass(frozen=True)
class Detection:
    attack: str
    delay_s: float | None  # attack start -> first page about it (event time); None: never paged
    queries: int | None  # the attack's queries sent before that page
    by: str = ""  # the rule that paged
    ticket_delay_s: float | None = None  # attack start -> first ticket about it


@dataclass
class DayReport:
    hours: float
    pages: int
    false_pages: int
    tickets: int
    false_tickets: int
    detections: dict[str, Detection]
    change_ticket_delay_s: float | None
    false_page_rules: dict[str, int] = field(default_factory=dict)
    false_ticket_rules: dict[str, int] = field(default_factory=dict)

    @property
    def false_pages_per_day(self) -> float:
        return self.false_pages * 24.0 / self.hours

    @property
    def false_tickets_per_day(self) -> float:
        return self.false_tickets * 24.0 / self.hours


def named_keys(alert: Alert) -> set[str]:
    """The client keys an alert names: its client, and any keys its evidence lists (a group of clients)."""
    keys = {alert.client_id} if alert.client_id else set()
    evidence: Any = getattr(alert, "evidence", None) or {}
    if isinstance(evidence, Mapping):
        keys |= set(evidence.get("keys", ()))
    return keys


def _about(alert: Alert, name: str, attack: Mapping[str, Any]) -> bool:
    if named_keys(alert) & set(attack["keys"]):
        return True
    return alert.client_id is None and attack["start"] <= alert.fired_at <= attack["end"] + AFTER_ATTACK_S \
        and not named_keys(alert)


def score_alerts(alerts: Sequence[Alert], truth: Mapping[str, Mapping[str, Any]],
                 query_times: Mapping[str, np.ndarray], hours: float, change_start: float | None) -> DayReport:
    """Pages and tickets against the attacks (``truth``) and the change (event time it began)."""
    fired = [a for a in alerts if a.status == "firing"]
    pages = [a for a in fired if a.severity == "page"]
    tickets = [a for a in fired if a.severity == "ticket"]
    false_pages = [a for a in pages if not any(_about(a, n, t) for n, t in truth.items())]
    false_tickets = [a for a in tickets if not any(_about(a, n, t) for n, t in truth.items())
                     and (change_start is None or a.fired_at < change_start)]
    detections = {}
    for name, attack in truth.items():
        about = [a for a in pages if _about(a, name, attack) and a.fired_at >= attack["start"]]
        first = min(about, key=lambda a: a.fired_at, default=None)
        first_ticket = min((a.fired_at for a in tickets if _about(a, name, attack) and a.fired_at >= attack["start"]),
                           default=None)
        sent = query_times.get(name, np.empty(0))
        detections[name] = Detection(
            name, None if first is None else first.fired_at - attack["start"],
            None if first is None else int((sent < first.fired_at).sum()), "" if first is None else first.rule,
            None if first_ticket is None else first_ticket - attack["start"])
    change_delay = None
    if change_start is not None:
        after = [a.fired_at for a in tickets if a.fired_at >= change_start]
        change_delay = min(after) - change_start if after else None
    return DayReport(hours, len(pages), len(false_pages), len(tickets), len(false_tickets), detections, change_delay,
                     _count_rules(false_pages), _count_rules(false_tickets))


def _count_rules(alerts: Sequence[Alert]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert.rule] = counts.get(alert.rule, 0) + 1
    return counts


@dataclass(frozen=True)
class SignalQuality:
    """One detector signal on one attack: per-event AUROC against all benign events, and the share of the
    attack's events (TPR) and of benign events (FPR) past the signal's own decision threshold."""

    auroc: float
    tpr: float
    fpr: float


def signal_quality(values: np.ndarray, flagged: np.ndarray, attack: np.ndarray, benign: np.ndarray) -> SignalQuality:
    """``values`` higher = more suspicious (NaN: the signal does not apply); ``flagged`` the signal's decision."""
    from sklearn.metrics import roc_auc_score

    usable = np.isfinite(values)
    a, b = attack & usable, benign & usable
    if not a.any() or not b.any():
        return SignalQuality(float("nan"), float("nan"), float("nan"))
    labels = np.r_[np.ones(a.sum()), np.zeros(b.sum())]
    auroc = float(roc_auc_score(labels, np.r_[values[a], values[b]]))
    return SignalQuality(auroc, float(flagged[attack].mean()), float(flagged[benign].mean()))


def reference_profile(day: Day, fpr: float = 0.002, draw: int = 0) -> Profile:
    """Fitted on the model's training data, or on a clean window of the day's production traffic. ``draw`` picks
    another fit/calibration split and kNN sample of the same reference (0: the one every report uses)."""
    family = day.family
    if family.reference == "window":
        return fit_profile(chunks(day.records), fpr=fpr, since=DAY_START, until=DAY_START + family.window_h * 3600,
                           seed=draw)
    model = {"digits": "digits-mlp", "cancer": "cancer-mlp", "text": "support-intents"}[family.data]
    return Profile({f"{model}/{space}": ModelProfile.fit(x, labels, logits, fpr=fpr, seed=family.seed + draw)
                    for space, (x, labels, logits) in day.reference.items()})


@dataclass
class Replayed:
    alerts: list
    signals: dict[str, np.ndarray]
    client_id: np.ndarray
    ts: np.ndarray
    seconds: float


def replay(day: Day, profile: Profile, rules: Rules, sinks: Sequence[Sink] = (),
           batch_size: int | None = None) -> Replayed:
    """The day through the in-process runtime (as ``advmon replay``), collecting alerts and per-event signals;
    ``batch_size`` records at a time (default: the setting's)."""
    settings = Settings.load(environ={})
    parts: list[EventSignals] = []
    verdicts: list[QueryVerdicts] = []

    def collect(result: BatchResult) -> None:
        parts.append(result.signals)
        verdicts.append(result.verdicts)

    runtime = InProcessRuntime.build(settings, rules, sinks=sinks, profile=profile, on_batch=collect)
    if not sinks:
        runtime.pipeline.routes = []  # forensic, as `advmon replay`: alerts are collected, never routed
    started = time.perf_counter()
    for records in chunks(day.records, batch_size or settings.batch_size):
        runtime.feed(records)
    runtime.finish()
    seconds = time.perf_counter() - started

    def column(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    signals = {name: column(name) for name in ("score_ratio", "confidence", "margin")}
    signals["margin_rank"] = column("margin_rank")
    signals.update(_query_signals(column("event_id"), QueryVerdicts.concat(verdicts)))
    signals["model"] = column("model")
    return Replayed(runtime.stats.alerts, signals, column("client_id"), column("ts"), seconds)


def _query_signals(event_id: np.ndarray, verdicts: QueryVerdicts) -> dict[str, np.ndarray]:
    """The matcher's verdicts in event order (they come bucket by bucket, after the events): False and "" for
    events without a fingerprinted query."""
    ids = event_id.astype(str)
    order = np.argsort(ids, kind="stable")
    at = order[np.searchsorted(ids, verdicts.event_id.astype(str), sorter=order)]
    out = {}
    for name, verdict, empty in (("near_duplicate", verdicts.near, np.zeros(len(ids))),
                                 ("own_near_duplicate", verdicts.own, np.zeros(len(ids))),
                                 ("cross_near_duplicate", verdicts.cross, np.zeros(len(ids))),
                                 ("matched_client", verdicts.matched_client, np.full(len(ids), "", dtype=object))):
        empty[at] = verdict
        out[name] = empty
    return out

