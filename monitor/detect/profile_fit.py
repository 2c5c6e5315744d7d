"""``advmon profile fit``: reference statistics from a JSON Lines file of clean traffic."""

from __future__ import annotations

import numpy as np

from monitor.detect.parsing import iter_lines, parse_batch
from monitor.detect.profiles import ModelProfile, Profile
from monitor.errors import ProfileError

MIN_EVENTS = 200


def fit_profile_file(path: str, fpr: float = 0.002, k: int = 50) -> Profile:
    """Fit a features profile and an embedding profile per model, where the events carry them."""
    columns: dict[tuple[str, str], list] = {}
    for records, sources in iter_lines(path):
        batch = parse_batch(records, sources).batch
        for event in batch.events:
            if event.input is None:
                continue
            logits = event.prediction.logits
            for space, vector in (
                ("features", event.input.features_array()),
                ("embedding", event.input.embedding_array()),
            ):
                if vector is not None:
                    columns.setdefault((event.model, space), []).append((vector, event.prediction.label, logits))
    models = {}
    for (model, space), rows in columns.items():
        dims = {len(v) for v, _, _ in rows}
        if len(dims) != 1:
            raise ProfileError(
                f"{model}/{space}: vectors of different lengths {sorted(dims)}; fit one model version at a time"
            )
        if len(rows) < MIN_EVENTS:
            raise ProfileError(f"{model}/{space}: {len(rows)} events, need at least {MIN_EVENTS} clean events to fit")
        matrix = np.stack([v for v, _, _ in rows])
        labels = np.array([label for _, label, _ in rows])
        stacked = None
        if (
            space == "embedding"
            and all(lg is not None for _, _, lg in rows)
            and len({len(lg) for _, _, lg in rows}) == 1
        ):
            stacked = np.array([lg for _, _, lg in rows], dtype=np.float32)
        models[f"{model}/{space}"] = ModelProfile.fit(matrix, labels, stacked, fpr=fpr, k=k)
    if not models:
        raise ProfileError(f"{path}: no events with input features or embeddings to fit")
    return Profile(models)
