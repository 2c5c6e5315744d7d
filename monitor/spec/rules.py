"""SLO and alert rules: YAML files validated by pydantic, with burn-rate tiers derived, never typed.

A rules directory holds one or more ``*.yaml`` files whose top-level sections are merged:
``windows`` (the burn-rate window table), ``slos``, ``drift``, ``no_data``, ``receivers``, ``routes``,
``silences`` and ``maintenance``. Unknown keys are rejected and every error names its file and line.

>>> rules = load_rules_text('''
... slos:
...   - {name: anomaly, sli: input_anomaly_rate, scope: model, objective: 0.99, period: 30d}
... ''')
>>> [(t.severity, t.long_s, t.short_s, round(t.factor, 2)) for t in rules.slos[0].tiers]
[('page', 3600, 300, 14.4), ('page', 21600, 1800, 6.0), ('ticket', 86400, 7200, 3.0), ('ticket', 259200, 21600, 1.0)]
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor.contracts.sli import SERIES, SLI_DEFINITIONS
from monitor.errors import RulesError
from monitor.spec.durations import Duration, WaitDuration, format_duration, parse_duration
from monitor.spec.silences import MaintenanceWindow, Silence

__all__ = ["Duration", "RulesError", "format_duration", "parse_duration"]  # re-exported for the CLI and tests

Severity = Literal["page", "ticket"]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Labels every alert has; a rule's own ``labels`` may not redefine them.
ALERT_LABELS = ("alertname", "rule", "slo", "severity", "model", "client_id", "sli")
#: What a rule's ``summary`` may name, e.g. ``"{model}: inputs unlike the reference ({severity})"``.
SUMMARY_FIELDS = ("model", "client_id", "name", "severity")


class _Alerting(_Rule):
    """What every alerting rule carries to its alerts: labels for routing (team, service), a summary template
    and a runbook (relative to the rules' ``runbook_base``, or absolute)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    runbook: str = ""

    @model_validator(mode="after")
    def _labels_and_summary_usable(self) -> _Alerting:
        bad = sorted(k for k in self.labels if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", k)
                     or k.startswith("__") or k.startswith("sloth_") or k in ALERT_LABELS)
        if bad:
            raise ValueError(f"labels {', '.join(bad)} are not allowed (Prometheus label names, not __*, sloth_* "
                             f"or the alert's own {', '.join(ALERT_LABELS)})")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.summary) if f is not None}
        except ValueError as exc:
            raise ValueError(f"summary is not a valid template: {exc}") from None
        unknown = sorted(fields - set(SUMMARY_FIELDS))
        if unknown:
            raise ValueError(f"summary names {', '.join('{' + f + '}' for f in unknown)}; it may name "
                             + ", ".join("{" + f + "}" for f in SUMMARY_FIELDS))
        return self

    def headline(self, model: str, client_id: str | None = None, severity: str = "") -> str:
        """The summary with its fields filled in (the rule's name where it has none).

        >>> DriftRule(name="confidence", summary="{model}: confidence moved ({severity})").headline("digits")
        'digits: confidence moved (ticket)'
        """
        if not self.summary:
            return self.name
        return self.summary.format(model=model, client_id=client_id or "", name=self.name,
                                   severity=severity or getattr(self, "severity", ""))


class WindowSpec(_Rule):
    """One row of the window table: alert when both windows burn faster than the factor, derived from
    ``budget_fraction`` (factor = budget_fraction * period / long) or stated (``factor: 1``: the rate itself)."""

    severity: Severity
    long: Duration
    short: Duration
    budget_fraction: float | None = Field(default=None, gt=0, le=1)
    factor: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _short_within_long(self) -> WindowSpec:
        if self.short >= self.long:
            raise ValueError("short window must be shorter than the long window")
        if (self.budget_fraction is None) == (self.factor is None):
            raise ValueError("give budget_fraction or factor (one of them)")
        return self

    def factor_for(self, period_s: int) -> float:
        return self.factor if self.factor is not None else float(self.budget_fraction or 0) * period_s / self.long


#: Google SRE workbook, chapter 5, for a 30-day SLO period.
DEFAULT_WINDOWS = (
    WindowSpec(severity="page", long=3600, short=300, budget_fraction=0.02),
    WindowSpec(severity="page", long=21600, short=1800, budget_fraction=0.05),
    WindowSpec(severity="ticket", long=86400, short=7200, budget_fraction=0.10),
    WindowSpec(severity="ticket", long=259200, short=21600, budget_fraction=0.10),
)


@dataclass(frozen=True)
class Tier:
    """A burn-rate tier of one SLO: ``factor = budget_fraction * period / long``."""

    severity: Severity
    long_s: int
    short_s: int
    factor: float

    @property
    def names(self) -> tuple[str, str]:
        return format_duration(self.long_s), format_duration(self.short_s)


class Slo(_Alerting):
    sli: str
    scope: Literal["model", "client"] = "model"
    objective: float = Field(gt=0, lt=1)
    period: Duration = 30 * 86400
    max_rate: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?x baseline$")
    min_events: int = Field(default=50, ge=1)
    severities: tuple[Severity, ...] = ("page", "ticket")
    resolve_after: Duration = 300
    windows: tuple[WindowSpec, ...] = DEFAULT_WINDOWS

    @property
    def baseline_multiple(self) -> float | None:
        """``max_rate: 5x baseline`` -> 5: the allowed bad rate is that multiple of the rate the profile measured
        on benign reference traffic (per model); ``objective`` stands where a model has no measured baseline."""
        return None if self.max_rate is None else float(self.max_rate.split("x")[0])

    def allowed_rate(self, baseline: float | None) -> float:
        """The error budget (allowed bad rate) for a model with this measured baseline (None: not measured)."""
        if self.baseline_multiple is None or baseline is None or baseline <= 0:
            return 1.0 - self.objective
        return min(0.5, self.baseline_multiple * baseline)

    @model_validator(mode="after")
    def _sli_known_and_tiers_can_fire(self) -> Slo:
        if self.sli not in SLI_DEFINITIONS:
            raise ValueError(f"unknown sli {self.sli!r}; known: {', '.join(SLI_DEFINITIONS)}")
        max_burn = 1.0 / (1.0 - self.objective)
        for tier in self.tiers:
            if tier.factor >= max_burn:
                raise ValueError(
                    f"{tier.severity} tier {tier.names[0]}/{tier.names[1]} has burn-rate factor {tier.factor:.3g}, "
                    f"at or above the largest possible burn rate 1/(1-objective) = {max_burn:.3g}: it can never "
                    f"fire; lower the objective or drop {tier.severity!r} from severities"
                )
        if not self.tiers:
            raise ValueError(f"no window in the table has a severity among {list(self.severities)}")
        return self

    @cached_property
    def tiers(self) -> tuple[Tier, ...]:
        """The burn-rate tiers of the SLO's severities, derived once from its window table."""
        return tuple(
            Tier(w.severity, w.long, w.short, w.factor_for(self.period))
            for w in self.windows
            if w.severity in self.severities
        )

    @property
    def horizon_s(self) -> int:
        """The longest window: how much history the evaluator keeps per key."""
        return max(t.long_s for t in self.tiers)


class DriftRule(_Alerting):
    """An online drift detector on a per-model series of clean (non-anomalous) traffic."""

    series: str = "clean_confidence_mean"  # one of monitor.contracts.sli.SERIES
    detector: Literal["adwin", "page_hinkley", "kswin"] = "adwin"
    delta: float = Field(default=0.002, gt=0, lt=1)
    threshold: float = Field(default=0.5, gt=0)
    alpha: float = Field(default=0.001, gt=0, lt=0.5)  # KSWIN: Kolmogorov-Smirnov significance level
    window_size: int = Field(default=100, ge=20)  # KSWIN: points kept
    stat_size: int = Field(default=30, ge=5)  # KSWIN: most recent points compared with the rest
    min_events: int = Field(default=20, ge=1)
    grace_points: int = Field(default=30, ge=1)
    severity: Severity = "ticket"
    resolve_after: Duration = 3600

    @model_validator(mode="after")
    def _series_known(self) -> DriftRule:
        if self.series not in SERIES:
            raise ValueError(f"unknown series {self.series!r}; known: {', '.join(SERIES)}")
        return self


class NoDataRule(_Alerting):
    """A model that had traffic and then none for ``after`` (event time, while other models go on)."""

    after: Duration = 900
    severity: Severity = "ticket"
    models: tuple[str, ...] = ()  # empty: every model seen


#: What a client can stand out on, against the live population (monitor.alerting.standout), and the default
#: set: repetition that other clients share (popular content, templates) is not a client's own probing.
STATISTICS = ("margin_rank", "input_score", "private_near_duplicate", "own_near_duplicate")
DEFAULT_STATISTICS = ("margin_rank", "input_score", "private_near_duplicate")


class Statistic(_Rule):
    """One statistic of a client test: it stands out when its rank-test effect (AUC) reaches ``min_effect``."""

    min_effect: float = Field(default=0.7, gt=0.5, lt=1.0)


class ClientRule(_Alerting):
    """Each client against every other client of the model in the same minutes (decayed windows), one rank test
    per statistic. The z threshold follows from the false-alarm budget (Bonferroni): with ``active_clients``
    tested every bucket on each statistic, a per-test error rate of ``false_pages_per_month`` / (tests per
    month) keeps false pages at or below that budget; ``min_effect`` keeps large, harmless clients from
    passing on tiny differences. When more than ``population_shift_share`` of the clients stand out on a
    statistic at once, the shift is the population's: one ticket, no pages."""

    statistics: dict[str, Statistic] = Field(default_factory=lambda: {s: Statistic() for s in DEFAULT_STATISTICS})
    half_life: Duration = 300
    min_queries: int = Field(default=30, ge=5)
    false_pages_per_month: float = Field(default=1.0, gt=0)
    active_clients: int = Field(default=100_000, ge=1)
    population_shift_share: float = Field(default=0.2, gt=0, le=1)
    severity: Severity = "page"
    resolve_after: Duration = 900

    @model_validator(mode="after")
    def _statistics_known(self) -> ClientRule:
        unknown = sorted(set(self.statistics) - set(STATISTICS))
        if unknown or not self.statistics:
            raise ValueError(f"statistics must be among {', '.join(STATISTICS)}; got {', '.join(unknown) or 'none'}")
        return self

    def z_threshold(self, bucket_s: int) -> float:
        """The one-sided z a client must reach: Phi^-1(1 - alpha), alpha the per-test error rate.

        >>> round(ClientRule(name="c").z_threshold(60), 2)   # 1 per month, 100k clients x 3 statistics x 43,200 min
        6.4
        """
        from statistics import NormalDist

        tests = self.active_clients * len(self.statistics) * (30 * 86400 / bucket_s)
        return NormalDist().inv_cdf(1.0 - self.false_pages_per_month / tests)


class GroupRule(_Alerting):
    """Clients whose queries chain to each other's: most of each one's queries near-duplicate another client's
    (``min_cross_share`` of at least ``min_queries``, decayed with ``half_life``), linked by at least
    ``min_matches`` such matches, ``min_keys`` or more of them, at least ``min_fresh_share`` of them keys
    first seen within ``fresh_within``: one alert naming every key (a black-box attack spread over many
    API keys). Popular content gives many clients a few cross matches each; a Sybil attacker's keys are new
    and do little else."""

    min_keys: int = Field(default=5, ge=2)
    min_cross_share: float = Field(default=0.5, gt=0, le=1)
    min_queries: float = Field(default=5.0, gt=0)
    min_matches: float = Field(default=1.0, gt=0)
    half_life: Duration = 600
    fresh_within: Duration = 3600  # a key first seen this recently is fresh (after as long a warm-up)
    min_fresh_share: float = Field(default=0.5, ge=0, le=1)  # of a group's keys; 0 judges old keys too
    severity: Severity = "page"
    resolve_after: Duration = 1800


class Route(_Rule):
    """Send alerts whose labels match every ``match`` entry to ``receivers``; first match wins unless ``continue``.

    Grouping as Alertmanager does it (event time): a new group waits ``group_wait`` for more alerts before
    its first notification, later changes go out at most every ``group_interval``, a still-firing group is
    announced again after ``repeat_interval``; a notification lists at most ``max_alerts`` alerts (the most
    convincing first) and counts the rest."""

    match: dict[str, str] = Field(default_factory=dict)
    receivers: tuple[str, ...]
    continue_: bool = Field(default=False, alias="continue")
    group_by: tuple[str, ...] = ("slo", "model")
    group_wait: WaitDuration = 30
    group_interval: Duration = 300
    repeat_interval: Duration = 4 * 3600
    max_alerts: int = Field(default=20, ge=1)


#: Receivers every daemon has without configuration.
BUILTIN_RECEIVERS = ("stdout",)
_DEFAULT_URLS = {"pagerduty": "https://events.pagerduty.com/v2/enqueue", "opsgenie": "https://api.opsgenie.com",
                 "github": "https://api.github.com"}
_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"


class Receiver(_Rule):
    """Where notifications go over HTTP. Secrets are never in the file: ``*_env`` name environment
    variables that hold them (the routing/API key, a webhook URL that embeds a token, an HMAC key)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    type: Literal["alertmanager-api", "pagerduty", "opsgenie", "alertmanager", "slack", "webhook", "github", "jira"]
    #: ``alertmanager-api``: the base URL of each Alertmanager of an HA cluster, comma-separated (each gets all).
    url: str | None = Field(default=None, pattern=r"^https?://[^,\s]+(,https?://[^,\s]+)*$")
    url_env: str | None = Field(default=None, pattern=_ENV_NAME)
    key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    hmac_secret_env: str | None = Field(default=None, pattern=_ENV_NAME)
    timeout: Duration = 10
    # Ticket receivers: GitHub ``repo: owner/name``; Jira ``project`` (key) and the workflow's names.
    repo: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")
    project: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]+$")
    issue_type: str = "Task"
    resolve_transition: str = "Done"
    reopen_transition: str = "To Do"
    #: Grafana's base URL: alerts link to the on-call dashboard of their model (Alertmanager's ``generatorURL``).
    grafana_url: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _complete(self) -> Receiver:
        if self.url and self.url_env:
            raise ValueError("give url or url_env, not both")
        if self.type == "github" and not self.repo:
            raise ValueError("a github receiver needs repo: owner/name")
        if self.type == "jira" and not self.project:
            raise ValueError("a jira receiver needs project (the project key)")
        if self.type in ("pagerduty", "opsgenie", "github", "jira") and not self.key_env:
            raise ValueError(f"a {self.type} receiver needs key_env (the environment variable holding its key)")
        if self.type not in _DEFAULT_URLS and not (self.url or self.url_env):
            raise ValueError(f"a {self.type} receiver needs url or url_env")
        return self

    @property
    def default_url(self) -> str | None:
        return self.url or _DEFAULT_URLS.get(self.type)


class Rules(_Rule):
    #: Where relative ``runbook`` paths live, e.g. ``https://git.example/ml/advmon/blob/main/``: alerts link there.
    runbook_base: str | None = Field(default=None, pattern=r"^https?://\S+/$")
    windows: tuple[WindowSpec, ...] = DEFAULT_WINDOWS
    slos: tuple[Slo, ...] = ()
    drift: tuple[DriftRule, ...] = ()
    no_data: tuple[NoDataRule, ...] = ()
    clients: tuple[ClientRule, ...] = ()
    groups: tuple[GroupRule, ...] = ()
    receivers: tuple[Receiver, ...] = ()
    routes: tuple[Route, ...] = (Route(receivers=("stdout",)),)
    silences: tuple[Silence, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _absolute_runbooks(cls, data: Any) -> Any:
        """Relative runbooks joined to ``runbook_base``, so pagers and tickets get a link that opens."""
        base = data.get("runbook_base") if isinstance(data, dict) else None
        if not isinstance(base, str):
            return data
        out = dict(data)
        for section in ("slos", "drift", "no_data", "clients", "groups"):
            if isinstance(out.get(section), list):
                out[section] = [dict(r, runbook=absolute_url(base, r["runbook"]))
                                if isinstance(r, dict) and isinstance(r.get("runbook"), str) else r
                                for r in out[section]]
        return out

    @model_validator(mode="after")
    def _receivers_exist(self) -> Rules:
        names = [r.name for r in self.receivers]
        clash = sorted({n for n in names if names.count(n) > 1 or n in BUILTIN_RECEIVERS})
        if clash:
            raise ValueError(f"receiver names must be unique and not {BUILTIN_RECEIVERS}: {', '.join(clash)}")
        known = set(names) | set(BUILTIN_RECEIVERS)
        missing = sorted({r for route in self.routes for r in route.receivers if r not in known})
        if missing:
            raise ValueError(f"routes name receivers that are not declared: {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Rules:
        names = [r.name for section in (self.slos, self.drift, self.no_data, self.clients, self.groups)
                 for r in section]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(repeated)}")
        return self


def absolute_url(base: str | None, path: str) -> str:
    """``path`` under ``base`` unless it is already absolute (or there is no base).

    >>> absolute_url("https://git.example/ml/advmon/blob/main/", "docs/runbooks.md#query-attack")
    'https://git.example/ml/advmon/blob/main/docs/runbooks.md#query-attack'
    """
    if not base or not path or re.match(r"^[a-z][a-z0-9+.-]*://", path):
        return path
    return base + path.lstrip("/")


def _apply_window_table(document: dict) -> dict:
    """SLOs without their own ``windows`` inherit the file's table."""
    table = document.get("windows")
    if table is None or not isinstance(document.get("slos"), list):
        return document
    slos = [dict(s, windows=s.get("windows", table)) if isinstance(s, dict) else s for s in document["slos"]]
    return {**document, "slos": slos}


def _line_of(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _validate(documents: list[tuple[str, dict, yaml.Node | None]]) -> Rules:
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, int], tuple[str, yaml.Node | None, int]] = {}
    problems: list[str] = []
    for name, document, node in documents:
        if not isinstance(document, dict):
            problems.append(f"{name}: the top level must be a mapping of sections")
            continue
        unknown = set(document) - set(Rules.model_fields)
        for key in sorted(unknown):
            problems.append(f"{name}:{_line_of(node, [key])}: unknown section {key!r}")
        document = _apply_window_table(document)
        for section in ("slos", "drift", "no_data", "clients", "groups", "receivers", "routes", "silences",
                        "maintenance"):
            for offset, item in enumerate(document.get(section) or []):
                origin[(section, len(merged.setdefault(section, [])))] = (name, node, offset)
                merged[section].append(item)
        for scalar in ("windows", "runbook_base"):
            if scalar in document:
                merged[scalar] = document[scalar]
    if problems:
        raise RulesError("\n".join(problems))
    try:
        return Rules.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            loc = list(error["loc"])
            where = "rules"
            section_item = (str(loc[0]), int(loc[1])) if len(loc) >= 2 and isinstance(loc[1], int) else None
            if section_item in origin:
                name, node, offset = origin[section_item]
                where = f"{name}:{_line_of(node, [loc[0], offset, *loc[2:]])}"
            path = ".".join(str(p) for p in loc)
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
        raise RulesError("\n".join(lines)) from None


def load_rules_text(text: str, name: str = "<rules>") -> Rules:
    try:
        return _validate([(name, yaml.safe_load(text) or {}, yaml.compose(text))])
    except yaml.YAMLError as exc:
        raise RulesError(f"{name}: invalid YAML: {exc}") from None


def load_rules(directory: str | Path) -> Rules:
    """Load and merge every ``*.yaml``/``*.yml`` file of a directory, in name order."""
    path = Path(directory)
    if not path.is_dir():
        raise RulesError(f"{path}: not a directory of rules files")
    files = sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
    if not files:
        raise RulesError(f"{path}: no *.yaml rules files")
    documents = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        try:
            documents.append((str(file), yaml.safe_load(text) or {}, yaml.compose(text)))
        except yaml.YAMLError as exc:
            raise RulesError(f"{file}: invalid YAML: {exc}") from None
    return _validate(documents)


def default_rules_dir() -> Path:
    """The shipped rules: ``monitor/default_rules``, the top-level ``rules/`` of the source tree (a link
    there; a copy in an installed wheel)."""
    return Path(__file__).resolve().parent.parent / "default_rules"
