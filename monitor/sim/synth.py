"""Synthetic inference traffic for ``advmon demo`` and tests: benign clients on several digit models
plus scripted attacks, generated in event time, deterministically from a seed.

Phases (minutes from the start; a 3-hour run by default):

- ``white-box``  (30-55) one client sends FGSM-perturbed digits to ``digits-mlp``;
- ``black-box``  (75-100) one client probes ``digits-mlp`` with near-duplicate queries (a boundary search);
- ``sybil``      (140-160) the same probing spread over many fresh client ids, each below per-client guards;
- ``drift``      (135-180) benign inputs to ``digits-mlp-wide`` get dimmer (a camera change), confidence drops.

Red-team canaries (FGSM with ground truth) and benign canaries run throughout; a few malformed
records exercise the dead-letter path.

>>> scenario = Scenario.build(seed=0, duration_s=600, benign_rate=2.0)
>>> chunks = list(scenario.chunks(chunk_s=300))
>>> len(chunks), all(isinstance(r, bytes) for r in chunks[0].records)
(2, True)
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

from monitor.detect.profiles import ModelProfile, Profile
from monitor.sim.toymodel import DigitsModel, augment, load_digits_scaled

START_TS = 1795593600.0  # 2026-11-25T08:00:00Z: a fixed start keeps runs reproducible


@dataclass(frozen=True)
class Phase:
    name: str
    start_s: float
    end_s: float
    model: str
    clients: tuple[str, ...]
    rate: float  # events per second over all the phase's clients
    expect_slos: tuple[str, ...]  # the SLOs that should catch it

    def explains(self, alert) -> bool:
        """Whether a firing alert names this phase's model (and one of its clients, for per-client and group
        alerts)."""
        keys = ({alert.client_id} if alert.client_id else set()) | set(alert.evidence.get("keys", ()))
        return (alert.status == "firing" and alert.slo in self.expect_slos and alert.model == self.model
                and (not keys or bool(keys & set(self.clients))))


@dataclass(frozen=True)
class Chunk:
    start_ts: float
    end_ts: float
    records: list[bytes]


class Scenario:
    def __init__(self, models: dict[str, DigitsModel], phases: list[Phase], seed: int, duration_s: float,
                 benign_rate: float, benign_clients: int, start_ts: float = START_TS) -> None:
        self.models = models
        self.phases = phases
        self.seed = seed
        self.duration_s = duration_s
        self.benign_rate = benign_rate
        self.clients = [f"key_{i:04x}{(i * 2654435761) % 65536:04x}" for i in range(benign_clients)]
        self.client_weights = 1.0 / np.arange(1, benign_clients + 1) ** 0.8
        self.client_weights /= self.client_weights.sum()
        self.start_ts = start_ts
        self._x, self._y = load_digits_scaled()

    @classmethod
    def build(cls, seed: int = 0, duration_s: float = 3 * 3600.0, benign_rate: float = 8.0,
              benign_clients: int = 40) -> Scenario:
        models = {"digits-mlp": DigitsModel.train(hidden=64, seed=seed),
                  "digits-mlp-wide": DigitsModel.train(hidden=128, seed=seed + 1)}
        scale = duration_s / (3 * 3600.0)
        minute = 60.0 * scale
        sybils = tuple(f"key_s{seed}{i:03d}" for i in range(100))
        phases = [
            Phase(
                "white-box",
                30 * minute,
                55 * minute,
                "digits-mlp",
                ("key_wb_7731",),
                1.0,
                ("client-standout", "profile-mismatch", "confidence-drift"),
            ),
            Phase(
                "black-box",
                75 * minute,
                100 * minute,
                "digits-mlp",
                ("key_bb_4410",),
                2.0,
                ("client-standout", "query-attack"),
            ),
            Phase(
                "sybil", 140 * minute, 160 * minute, "digits-mlp", sybils, 3.0,
                ("sybil-group", "client-standout", "query-attack"),
            ),
            Phase("drift", 135 * minute, 180 * minute, "digits-mlp-wide", (), 0.0,
                  ("confidence-drift", "profile-mismatch")),
        ]
        return cls(models, phases, seed, duration_s, benign_rate, benign_clients)

    def reference_profile(self, per_model: int = 6000, fpr: float = 0.002) -> Profile:
        """What ``advmon profile fit`` would learn from a clean reference sample of each model's traffic."""
        rng = np.random.default_rng(self.seed + 1000)
        fitted = {}
        for name, model in self.models.items():
            x, _ = augment(rng, self._x, self._y, per_model)
            out = model.forward(x)
            predicted = out.probs.argmax(axis=1).astype(str)
            fitted[f"{name}/features"] = ModelProfile.fit(x, predicted, fpr=fpr, seed=self.seed)
            fitted[f"{name}/embedding"] = ModelProfile.fit(
                out.embedding, predicted, out.logits, fpr=fpr, seed=self.seed
            )
        return Profile(fitted)

    def chunks(self, chunk_s: float = 60.0) -> Iterator[Chunk]:
        """Records chunk by chunk of event time (mildly out of order within a chunk, as in real logs)."""
        rng = np.random.default_rng(self.seed)
        t = 0.0
        serial = 0
        while t < self.duration_s:
            end = min(t + chunk_s, self.duration_s)
            events = self._benign(rng, t, end) + self._canaries(rng, t, end) + self._attacks(rng, t, end)
            events.sort(key=lambda e: e[0] + rng.uniform(0, 2.0))
            records = []
            for ts, doc in events:
                serial += 1
                doc["event_id"] = f"ev-{self.seed}-{serial:08d}"
                doc["ts"] = round(self.start_ts + ts, 3)
                records.append(orjson.dumps(doc))
            records.extend(self._malformed(rng, t, end))
            yield Chunk(self.start_ts + t, self.start_ts + end, records)
            t = end

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)

    def _times(self, rng: np.random.Generator, rate: float, start: float, end: float) -> np.ndarray:
        return np.sort(rng.uniform(start, end, rng.poisson(rate * (end - start))))

    def _benign(self, rng, start: float, end: float) -> list:
        times = self._times(rng, self.benign_rate, start, end)
        models = np.where(rng.random(len(times)) < 0.65, "digits-mlp", "digits-mlp-wide")
        clients = rng.choice(len(self.clients), size=len(times), p=self.client_weights)
        x, y = augment(rng, self._x, self._y, len(times))
        drift = self.phase("drift")
        drifting = (models == drift.model) & (times >= drift.start_s) & (times < drift.end_s)
        if drifting.any():  # a dimmer, lower-contrast camera: progressively towards 55% brightness
            progress = np.clip((times[drifting] - drift.start_s) / (0.3 * (drift.end_s - drift.start_s)), 0, 1)
            x[drifting] *= (1 - 0.45 * progress)[:, None].astype(np.float32)
        labelled = rng.random(len(times)) < 0.2
        out = []
        for name in self.models:
            rows = np.flatnonzero(models == name)
            out += self._records(name, times[rows], [self.clients[c] for c in clients[rows]], x[rows], y[rows],
                                 labelled[rows], traffic="")
        return out

    def _canaries(self, rng, start: float, end: float) -> list:
        out = []
        for traffic, client, eps in (
            ("canary-adversarial", "redteam-canary", 0.2),
            ("canary-benign", "benign-canary", 0.0),
        ):
            times = self._times(rng, 0.1, start, end)
            x, y = augment(rng, self._x, self._y, len(times))
            model = self.models["digits-mlp"]
            if eps:
                x = model.fgsm(x, y, eps)
            out += self._records("digits-mlp", times, [client] * len(times), x, y, np.ones(len(times), bool), traffic)
        return out

    def _attacks(self, rng, start: float, end: float) -> list:
        out = []
        for phase in self.phases:
            lo, hi = max(start, phase.start_s), min(end, phase.end_s)
            if lo >= hi or not phase.clients:
                continue
            times = self._times(rng, phase.rate, lo, hi)
            if phase.name == "white-box":
                x, y = augment(rng, self._x, self._y, len(times))
                x = self.models[phase.model].fgsm(x, y, rng.uniform(0.05, 0.15, (len(times), 1)))
            else:
                x, y = self._boundary_probe(rng, phase, len(times))
            clients = [phase.clients[i] for i in rng.integers(0, len(phase.clients), len(times))]
            out += self._records(phase.model, times, clients, x, y, np.zeros(len(times), bool), "")
        return out

    def _boundary_probe(self, rng, phase: Phase, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A HopSkipJump-like search: queries near the boundary between a source and a target image."""
        pair_rng = np.random.default_rng(zlib.crc32(phase.name.encode()) + self.seed)
        (source, target), _ = augment(pair_rng, self._x, self._y, 2)
        alpha = np.clip(0.5 + rng.normal(0, 0.04, (n, 1)), 0, 1).astype(np.float32)
        x = alpha * source + (1 - alpha) * target + rng.normal(0, 0.01, (n, 64)).astype(np.float32)
        return np.clip(x, 0, 1).astype(np.float32), np.full(n, -1)

    def _records(self, name: str, times, clients, x, y, labelled, traffic: str) -> list:
        if not len(times):
            return []
        model = self.models[name]
        out = model.forward(x)
        predicted = out.probs.argmax(axis=1)
        docs = []
        for i in range(len(times)):
            embedding = out.embedding[i]
            doc = {
                "model": name,
                "model_version": "3",
                "client_id": clients[i],
                "input": {
                    "features": np.round(x[i], 3).tolist(),
                    "embedding": (
                        {"b64": base64.b64encode(embedding.astype("<f2").tobytes()).decode(), "dtype": "float16"}
                        if name.endswith("wide")
                        else np.round(embedding, 4).tolist()
                    ),
                },
                "prediction": {
                    "label": str(predicted[i]),
                    "confidence": round(float(out.probs[i, predicted[i]]), 4),
                    "logits": np.round(out.logits[i], 3).tolist(),
                },
            }
            if labelled[i] and y[i] >= 0:
                doc["ground_truth"] = str(y[i])
            if traffic:
                doc["tags"] = {"traffic": traffic}
            docs.append((float(times[i]), doc))
        return docs

    def _malformed(self, rng, start: float, end: float) -> list[bytes]:
        """About one bad record every ten minutes: what a buggy logger really sends."""
        bad = [b'{"event_id": "x", "ts": "yesterday"', b'{"event_id": "y", "ts": 1, "client_id": "c"}',
               b'{"event_id":"z","ts":1,"client_id":"c","prediction":{"label":"1","confidence":NaN}}', b"\xff\xfe"]
        return [bad[i % len(bad)] for i in range(rng.poisson((end - start) / 600.0))]
