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

from monitor.detect.parsing import iter_lines, parse_batch
from monitor.detect.profiles import ModelProfile, Profile
from monitor.errors import ProfileError

MIN_EVENTS = 200

_Columns = dict[tuple[str, str], list[tuple[np.ndarray, str, list[float] | None]]]


def fit_profile_file(path: str, fpr: float = 0.002, k: int = 50, since: float | None = None,
                     until: float | None = None, covariance: str = "ledoit-wolf") -> Profile:
    """Fit a features profile and an embedding profile per model, where the events carry them."""
    return fit_profile((records for records, _ in iter_lines(path)), fpr, k, since, until, name=path,
                       covariance=covariance)


def fit_profile(batches: Iterable[Sequence[bytes]], fpr: float = 0.002, k: int = 50, since: float | None = None,
                until: float | None = None, name: str = "reference", covariance: str = "ledoit-wolf") -> Profile:
    """The same from batches of raw records; only events with ``since <= ts < until`` count."""
    columns: _Columns = {}
    window: list[bytes] = []
    for records in batches:
        events = parse_batch(records).batch.events
        kept = _collect(events, columns, since, until)
        window += [records[i] for i in kept] if len(events) == len(records) else _records_of(events, kept)
    models = {f"{model}/{space}": _fit_space(model, space, rows, fpr, k, covariance)
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
                           for i in range(0, len(records), batch_size)])
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


def _records_of(events: Sequence, kept: list[int]) -> list[bytes]:
    """Valid events re-encoded (when some records of a batch were invalid, indices no longer line up)."""
    import orjson

    return [orjson.dumps(events[i].model_dump(mode="json", exclude_none=True)) for i in kept]


def _collect(events: Sequence, columns: _Columns, since: float | None, until: float | None) -> list[int]:
    """Add the window's vectors to ``columns``; returns the indices of the events inside the window."""
    kept = []
    for index, event in enumerate(events):
        if (since is not None and event.ts < since) or (until is not None and event.ts >= until):
            continue
        kept.append(index)
        if event.input is None:
            continue
        logits = event.prediction.logits
        for space, vector in (("features", event.input.features_array()), ("embedding", event.input.embedding_array())):
            if vector is not None:
                columns.setdefault((event.model, space), []).append((vector, event.prediction.label, logits))
    return kept


def _fit_space(model: str, space: str, rows: list, fpr: float, k: int, covariance: str) -> ModelProfile:
    dims = {len(v) for v, _, _ in rows}
    if len(dims) != 1:
        raise ProfileError(f"{model}/{space}: vectors of different lengths {sorted(dims)}; fit one model version "
                           "at a time")
    if len(rows) < MIN_EVENTS:
        raise ProfileError(f"{model}/{space}: {len(rows)} events, need at least {MIN_EVENTS} clean events to fit")
    matrix = np.stack([v for v, _, _ in rows])
    labels = np.array([label for _, label, _ in rows])
    logits = None
    if space == "embedding" and all(lg is not None for _, _, lg in rows) and len({len(lg) for _, _, lg in rows}) == 1:
        logits = np.array([lg for _, _, lg in rows], dtype=np.float32)
    return ModelProfile.fit(matrix, labels, logits, fpr=fpr, k=k, covariance=covariance)
