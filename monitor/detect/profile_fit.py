"""``advmon profile fit``: reference statistics from clean traffic (a JSON Lines file, or any batches of
raw records), optionally only the events of a time window of production traffic; and the learned
baselines: the benign rate of every SLI measured on that traffic with the new profile.

>>> import orjson
>>> rng = np.random.default_rng(0)
>>> records = [orjson.dumps({"event_id": str(i), "ts": i, "client_id": f"c{i % 7}", "model": "m",
...     "input": {"features": rng.random(8).tolist()}, "prediction": {"label": str(i % 2), "confidence": 0.9}})
...     for i in range(600)]
>>> profile = fit_profile([records], since=100, until=500)
>>> sorted(profile.models), profile.get("m", "features").dim, 0 <= profile.baseline("m", "input_anomaly_rate") < 0.1
(['m/features'], 8, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from monitor.detect.batch import EventBatch
from monitor.detect.parsing import iter_lines, parse_batch
from monitor.detect.profiles import DEFAULT_BANK, ModelProfile, Profile
from monitor.errors import ProfileError

MIN_EVENTS = 200

#: (model, space) -> chunks of (vectors, labels, logits with NaN rows where an event logged none)
_Columns = dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def fit_profile_file(path: str, fpr: float = 0.002, k: int = 50, since: float | None = None,
                     until: float | None = None, covariance: str = "ledoit-wolf",
                     bank_size: int = DEFAULT_BANK) -> Profile:
    """Fit a features profile and an embedding profile per model, where the events carry them."""
    return fit_profile((records for records, _ in iter_lines(path)), fpr, k, since, until, name=path,
                       covariance=covariance, bank_size=bank_size)


def fit_profile(batches: Iterable[Sequence[bytes]], fpr: float = 0.002, k: int = 50, since: float | None = None,
                until: float | None = None, name: str = "reference", covariance: str = "ledoit-wolf",
                bank_size: int = DEFAULT_BANK, seed: int = 0) -> Profile:
    """The same from batches of raw records; only events with ``since <= ts < until`` count. ``seed`` draws the
    fit/calibration split and the kNN sample (:meth:`ModelProfile.fit`)."""
    columns: _Columns = {}
    window: list[bytes] = []
    for records in batches:
        parsed = parse_batch(records)
        kept = _collect(parsed.batch, columns, since, until)
        window += [records[i] for i in parsed.valid[kept].tolist()]
    models = {f"{model}/{space}": _fit_space(model, space, rows, fpr, k, covariance, bank_size, seed)
              for (model, space), rows in columns.items()}
    if not models:
        span = "" if since is None and until is None else f" between {since} and {until}"
        raise ProfileError(f"{name}: no events with input features or embeddings{span} to fit")
    profile = Profile(models)
    return Profile(models, measure_baselines(window, profile))


def measure_baselines(records: Sequence[bytes], profile: Profile,
                      batch_size: int = 4096) -> dict[str, dict[str, float]]:
    """Per model: the rate of every SLI (``SLI_DEFINITIONS``) and the mean of every derived series, as the
    engine with ``profile`` measures them on ``records`` (benign reference traffic)."""
    from monitor.contracts.sli import DERIVED_SERIES, SLI_DEFINITIONS, SliRows, series_values, value_index
    from monitor.detect.engine import Engine, EngineSettings

    engine = Engine(EngineSettings(fingerprint_secret=b"advmon-profile-baselines"), profile)
    rows = SliRows.concat([engine.process(parse_batch(records[i:i + batch_size]).batch).rows
                           for i in range(0, len(records), batch_size)] + [engine.finish().rows])
    out: dict[str, dict[str, float]] = {}
    for model in np.unique(rows.model.astype(str)).tolist():
        mine = rows.take(rows.model.astype(str) == model)
        totals = mine.values.sum(axis=0)
        rates = {name: float(totals[value_index(bad)] / totals[value_index(total)])
                 for name, (bad, total) in SLI_DEFINITIONS.items() if totals[value_index(total)] > 0}
        for series in DERIVED_SERIES:
            value, weight = series_values(series, mine.values, 60)
            usable = np.isfinite(value) & (weight > 0)
            if usable.any():
                rates[series] = float(np.average(value[usable], weights=weight[usable]))
        out[model] = rates
    return out


def _collect(batch: EventBatch, columns: _Columns, since: float | None, until: float | None) -> np.ndarray:
    """Add the window's vectors to ``columns``; returns the rows of the events inside the window."""
    inside = np.ones(len(batch), bool)
    if since is not None:
        inside &= batch.ts >= since
    if until is not None:
        inside &= batch.ts < until
    window = batch.take(inside)
    classes = window.common_logit_classes
    for space, groups in (("features", window.feature_groups()), ("embedding", window.embedding_groups())):
        for _, (rows, matrix) in groups.items():
            for model in np.unique(window.model[rows]).tolist():
                mine = window.model[rows] == model
                columns.setdefault((model, space), []).append(
                    (matrix[mine], window.label[rows[mine]], window.logits_matrix(rows[mine], classes)))
    return np.flatnonzero(inside)


def _fit_space(model: str, space: str, chunks: list, fpr: float, k: int, covariance: str,
               bank_size: int, seed: int = 0) -> ModelProfile:
    dims = {m.shape[1] for m, _, _ in chunks}
    if len(dims) != 1:
        raise ProfileError(f"{model}/{space}: vectors of different lengths {sorted(dims)}; fit one model version "
                           "at a time")
    matrix = np.concatenate([m for m, _, _ in chunks])
    if len(matrix) < MIN_EVENTS:
        raise ProfileError(f"{model}/{space}: {len(matrix)} events, need at least {MIN_EVENTS} clean events to fit")
    labels = np.concatenate([lb for _, lb, _ in chunks]).astype(str)
    logits = None
    if space == "embedding" and len({lg.shape[1] for _, _, lg in chunks}) == 1:
        stacked = np.concatenate([lg for _, _, lg in chunks])
        logits = stacked if stacked.shape[1] and np.isfinite(stacked).all() else None  # every event logged them
    return ModelProfile.fit(matrix, labels, logits, fpr=fpr, k=k, seed=seed, covariance=covariance,
                            bank_size=bank_size)
