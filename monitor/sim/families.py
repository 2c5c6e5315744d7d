"""Scenario families for the detection benchmark: a day of traffic that ``advmon demo``'s generator did not
write, with attacks from real attack code at times the detectors are not told.

Each family differs from the others and from the demo in its model, its data, how benign clients behave
and how its reference profile is fitted:

- benign clients with heavy-tailed activity (Zipf over keys; one proxy key relaying many users), each
  with its own device (brightness, sensor noise, blur, class mix) and transforms the reference never saw
  (rotation, zoom, gamma; typos for text);
- popular inputs resubmitted by many clients (near-identical re-encodings), and exact retries;
- a gradual change shared by the whole population (a dimmer camera, noisier sensors, re-scaled lab units,
  a product launch in text);
- attacks from adversarial-robustness-toolbox (FGSM, PGD, HopSkipJump, Boundary, Square, SimBA) or this
  package's score-based random search and word-substitution attack, from one key or round-robin over many.

>>> family = FAMILIES["digits-train-ref"].scaled(hours=0.25, benign_rate=2.0, attacks=())
>>> day = generate(family)
>>> len(day.records) > 1000, day.truth == {}, sorted(day.reference)
(True, True, ['embedding', 'features'])
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from monitor.sim.toymodel import Forward, NumpyMlp

DAY_START = 1796083200.0  # 2026-12-01T00:00:00Z


@dataclass(frozen=True)
class Attack:
    """One attack campaign: ``method`` from ``start_h`` (hours into the day) at ``rate`` queries/s."""

    name: str
    method: str  # fgsm | pgd | hopskipjump | boundary | square | simba | random-search | word-swap
    start_h: float
    eps: float = 0.0
    keys: int = 1  # API keys, used round-robin
    rate: float = 1.0
    sources: int = 3  # inputs attacked one after the other (white-box: one query per input)

    @property
    def black_box(self) -> bool:
        return self.method not in ("fgsm", "pgd")


@dataclass(frozen=True)
class Change:
    """A change shared by every client: ramps in over ``ramp_h`` hours from ``start_h`` and stays."""

    kind: str  # dim | noise | rescale | launch
    start_h: float
    ramp_h: float = 3.0
    strength: float = 0.3

    def level(self, hours: np.ndarray) -> np.ndarray:
        return np.clip((hours - self.start_h) / self.ramp_h, 0.0, 1.0) * self.strength


@dataclass(frozen=True)
class Family:
    name: str
    data: str  # digits | cancer | text
    hidden: int
    seed: int
    reference: str  # "training" or "window" (the first ``window_h`` hours of production, before any attack)
    change: Change
    attacks: tuple[Attack, ...]
    hours: float = 24.0
    benign_rate: float = 3.0  # benign events per second
    clients: int = 400
    zipf: float = 1.1
    proxy_share: float = 0.0  # traffic of one key relaying many end users
    popular_share: float = 0.08  # resubmissions of popular content
    popular_items: int = 40
    retry_share: float = 0.02  # exact retries of the client's previous query
    noise: tuple[float, float] = (0.0, 0.05)  # per-client sensor noise (std), log-uniform between
    window_h: float = 3.0
    labelled_share: float = 0.1

    def scaled(self, **changes: Any) -> Family:
        return dataclasses.replace(self, **changes)

    def compressed(self, hours: float) -> Family:
        """The family's day in ``hours``: the reference window, the population-wide change and every attack's
        start scaled in proportion, so that the shorter stream has the day's shape (a window of clean traffic,
        then attacks among benign traffic; ``scaled(hours=...)`` cuts the benign traffic but leaves the attacks
        at their hours, alone in a silent stream). Attacks keep their rates, so their lengths, and may overlap.

        >>> day = FAMILIES["digits-window-ref"].compressed(3.0)
        >>> day.window_h, day.change.start_h, sorted(round(a.start_h, 2) for a in day.attacks)
        (0.375, 1.125, [0.66, 1.45, 1.77, 2.23, 2.56])
        """
        k = hours / self.hours
        return dataclasses.replace(
            self, hours=hours, window_h=self.window_h * k,
            change=dataclasses.replace(self.change, start_h=self.change.start_h * k, ramp_h=self.change.ramp_h * k),
            attacks=tuple(dataclasses.replace(a, start_h=a.start_h * k) for a in self.attacks))


@dataclass
class Day:
    """A generated family: records in event-time order, the attackers' keys and windows, the reference."""

    family: Family
    records: list[bytes]
    truth: dict[str, dict[str, Any]]  # attack name -> {keys, start, end, queries, succeeded}
    reference: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]  # space -> (vectors, labels, logits)
    model: Any = field(repr=False, default=None)

    @property
    def start_ts(self) -> float:
        return DAY_START

    def attack_keys(self) -> dict[str, str]:
        """API key -> attack name."""
        return {key: name for name, t in self.truth.items() for key in t["keys"]}


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("digits-train-ref", "digits", hidden=96, seed=11, reference="training",
           change=Change("dim", start_h=13.0, strength=0.3),
           attacks=(Attack("pgd-0.05", "pgd", 4.5, eps=0.05, rate=0.5, sources=600),
                    Attack("pgd-0.10", "pgd", 7.2, eps=0.10, rate=0.5, sources=600),
                    Attack("fgsm-0.10-spread", "fgsm", 16.4, eps=0.10, keys=25, rate=1.0, sources=1200),
                    Attack("hopskipjump", "hopskipjump", 10.1, rate=3.0, sources=3),
                    Attack("square", "square", 19.3, rate=3.0, sources=3),
                    Attack("boundary-spread", "boundary", 21.6, keys=30, rate=3.0, sources=3))),
    Family("digits-window-ref", "digits", hidden=48, seed=23, reference="window", clients=120, zipf=1.4,
           proxy_share=0.15, popular_share=0.2, noise=(0.01, 0.08),
           change=Change("noise", start_h=9.0, ramp_h=4.0, strength=0.05),
           attacks=(Attack("pgd-0.10", "pgd", 14.2, eps=0.10, rate=0.3, sources=500),
                    Attack("fgsm-0.05", "fgsm", 5.3, eps=0.05, rate=1.0, sources=900),
                    Attack("hopskipjump-spread", "hopskipjump", 17.8, keys=30, rate=4.0, sources=3),
                    Attack("square-spread", "square", 11.6, keys=25, rate=3.0, sources=3),
                    Attack("simba", "simba", 20.5, rate=2.0, sources=2))),
    Family("cancer-train-ref", "cancer", hidden=32, seed=37, reference="training", benign_rate=2.0, clients=250,
           popular_share=0.05, noise=(0.01, 0.04), change=Change("rescale", start_h=15.0, ramp_h=2.0, strength=0.3),
           attacks=(Attack("pgd-0.05", "pgd", 6.1, eps=0.05, rate=0.5, sources=500),
                    Attack("pgd-0.10", "pgd", 18.9, eps=0.10, rate=0.5, sources=500),
                    Attack("hopskipjump", "hopskipjump", 9.4, rate=3.0, sources=3),
                    Attack("boundary-spread", "boundary", 12.7, keys=25, rate=3.0, sources=3),
                    Attack("random-search", "random-search", 21.2, rate=2.0, sources=3),
                    Attack("random-search-spread", "random-search", 3.8, keys=20, rate=2.0, sources=3))),
    Family("text-window-ref", "text", hidden=32, seed=41, reference="window", benign_rate=2.0, clients=300,
           popular_share=0.12, change=Change("launch", start_h=12.0, ramp_h=2.0, strength=0.4),
           attacks=(Attack("word-swap", "word-swap", 8.3, rate=1.0, sources=12),
                    Attack("word-swap-spread", "word-swap", 19.1, keys=24, rate=1.0, sources=12))),
)}


def generate(family: Family) -> Day:
    """The family's day, deterministic in its seed."""
    world = _World.build(family)
    events = world.benign() + world.attacks()
    events.sort(key=lambda e: e[0])
    records = [_record(family, i, ts, doc) for i, (ts, doc) in enumerate(events)]
    return Day(family, records, world.truth, world.reference(), world.model)


def _record(family: Family, serial: int, ts: float, doc: dict) -> bytes:
    doc["event_id"] = hashlib.blake2b(f"{family.name}/{serial}".encode(), digest_size=8).hexdigest()
    doc["ts"] = round(DAY_START + ts, 3)
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)  # float32 arrays in their shortest form


@dataclass
class _Clients:
    ids: list[str]
    weight: np.ndarray
    noise: np.ndarray
    brightness: np.ndarray
    blur: np.ndarray
    classes: np.ndarray  # (clients, classes) class mix

    @classmethod
    def draw(cls, rng: np.random.Generator, family: Family, n_classes: int) -> _Clients:
        n = family.clients
        ids = [_key(f"{family.name}/{i}") for i in range(n)]
        weight = 1.0 / np.arange(1, n + 1) ** family.zipf
        weight = weight / weight.sum() * (1 - family.proxy_share)
        if family.proxy_share:
            weight[0] += family.proxy_share  # the proxy: one key, many end users, the whole class mix
        lo, hi = family.noise
        noise = np.exp(rng.uniform(np.log(max(lo, 1e-3)), np.log(max(hi, 2e-3)), n)) if hi > 0 else np.zeros(n)
        classes = rng.dirichlet(np.full(n_classes, 0.7), n)
        if family.proxy_share:
            classes[0] = 1.0 / n_classes
        return cls(ids, weight, noise, rng.uniform(0.85, 1.15, n), rng.random(n) < 0.2, classes)


class _World:
    """The model, data pools and clients of one family, and the traffic they make."""

    def __init__(self, family: Family, model: Any, pools: dict[str, Any], n_classes: int) -> None:
        self.family = family
        self.model = model
        self.pools = pools
        self.rng = np.random.default_rng(family.seed)
        self.clients = _Clients.draw(self.rng, family, n_classes)
        self.truth: dict[str, dict[str, Any]] = {}

    @classmethod
    def build(cls, family: Family) -> _World:
        if family.data == "text":
            return _TextWorld.make(family)
        return _NumericWorld.make(family)

    def benign(self) -> list[tuple[float, dict]]:
        f, rng = self.family, self.rng
        times = np.sort(rng.uniform(0, f.hours * 3600, rng.poisson(f.benign_rate * f.hours * 3600)))
        client = rng.choice(len(self.clients.ids), size=len(times), p=self.clients.weight)
        kind = rng.choice(3, size=len(times), p=[1 - f.popular_share - f.retry_share, f.popular_share, f.retry_share])
        return self._benign_events(times, client, kind)

    def _benign_events(self, times: np.ndarray, client: np.ndarray, kind: np.ndarray) -> list[tuple[float, dict]]:
        raise NotImplementedError

    def attacks(self) -> list[tuple[float, dict]]:
        out: list[tuple[float, dict]] = []
        for attack in self.family.attacks:
            queries, succeeded = self._attack_queries(attack)
            keys = [_key(f"{attack.name}/{self.family.name}/{k}") for k in range(attack.keys)]
            start = attack.start_h * 3600
            times = start + np.cumsum(self.rng.exponential(1.0 / attack.rate, len(queries)))
            owners = [keys[i % len(keys)] for i in range(len(queries))]
            self.truth[attack.name] = {"keys": keys, "start": DAY_START + float(times[0]),
                                       "end": DAY_START + float(times[-1]), "queries": len(queries),
                                       "succeeded": succeeded, "method": attack.method, "eps": attack.eps}
            out += self._events(times, owners, queries, labels=None)
        return out

    def _attack_queries(self, attack: Attack) -> tuple[Any, float]:
        raise NotImplementedError

    def _events(self, times: np.ndarray, owners: list[str], inputs: Any, labels: np.ndarray | None
                ) -> list[tuple[float, dict]]:
        raise NotImplementedError

    def reference(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        raise NotImplementedError


class _NumericWorld(_World):
    """Digits (8x8 images) or breast-cancer measurements (30 values), scaled to [0, 1], and an MLP."""

    @classmethod
    def make(cls, family: Family) -> _NumericWorld:
        from sklearn.datasets import load_breast_cancer, load_digits
        from sklearn.model_selection import train_test_split

        if family.data == "digits":
            digits = load_digits()
            x, y = (digits.data / 16.0).astype(np.float32), digits.target
        else:
            cancer = load_breast_cancer()
            lo, hi = np.percentile(cancer.data, [1, 99], axis=0)
            x, y = np.clip((cancer.data - lo) / (hi - lo), 0, 1).astype(np.float32), cancer.target
        x_train, x_pool, y_train, y_pool = train_test_split(x, y, test_size=0.5, random_state=family.seed, stratify=y)
        rng = np.random.default_rng(family.seed + 1)
        x_train = np.vstack([x_train] + [_warp(rng, x_train) if family.data == "digits" else x_train
                                         for _ in range(3)])  # trained with rotations and zooms, as models are
        y_train = np.tile(y_train, 4)
        x_train = np.clip(x_train + rng.normal(0, 0.02, x_train.shape), 0, 1).astype(np.float32)
        model = NumpyMlp(*NumpyMlp.fit_weights(x_train, y_train, family.hidden, family.seed, max_iter=150))
        popular = rng.choice(len(x_pool), family.popular_items, replace=False)
        pools = {"x_train": x_train, "y_train": y_train, "x": x_pool, "y": y_pool, "popular": x_pool[popular]}
        return cls(family, model, pools, int(y.max()) + 1)

    @property
    def image(self) -> bool:
        return self.family.data == "digits"

    def _benign_events(self, times: np.ndarray, client: np.ndarray, kind: np.ndarray) -> list[tuple[float, dict]]:
        rng, pools, c = self.rng, self.pools, self.clients
        n = len(times)
        cumulative = np.cumsum(c.classes[client], axis=1)
        wanted = (rng.random((n, 1)) > cumulative).sum(axis=1)
        by_class = [np.flatnonzero(pools["y"] == k) for k in range(c.classes.shape[1])]
        source = np.array([rng.choice(by_class[k]) for k in wanted])
        x = self._device(self._variant(pools["x"], source, by_class, wanted), client, times)
        popular = kind == 1
        weights = 1.0 / np.arange(1, len(pools["popular"]) + 1)
        items = rng.choice(len(pools["popular"]), popular.sum(), p=weights / weights.sum())
        x[popular] = np.clip(pools["popular"][items] + rng.normal(0, 0.004, (popular.sum(), x.shape[1])), 0, 1)
        x = np.round(x, 3)
        for i in np.flatnonzero(kind == 2):  # an exact retry of this client's previous query
            earlier = np.flatnonzero(client[:i] == client[i])
            if len(earlier):
                x[i] = x[earlier[-1]]
        labels = np.where(popular, -1, pools["y"][source])
        return self._events(times, [c.ids[k] for k in client], x, labels)

    def _variant(self, pool: np.ndarray, source: np.ndarray, by_class: list[np.ndarray], wanted: np.ndarray
                 ) -> np.ndarray:
        """A new input of the source's class, never seen before: an elastic deformation of a digit (Simard et
        al. 2003), or for records a SMOTE-style point between two records of the class (Chawla et al. 2002)."""
        if self.image:
            return _elastic(self.rng, pool[source])
        partner = np.array([self.rng.choice(by_class[k]) for k in wanted])
        mix = self.rng.random((len(source), 1)).astype(np.float32)
        return pool[source] + mix * (pool[partner] - pool[source])

    def _device(self, x: np.ndarray, client: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Each client's camera or lab (brightness, noise, blur), natural variation the reference never saw
        (rotation, zoom, gamma), and the population-wide change."""
        rng, c, change = self.rng, self.clients, self.family.change
        level = change.level(times / 3600.0)
        out = x.copy()
        if self.image:
            out = _warp(rng, out)
            blurred = c.blur[client]
            out[blurred] = _blur(out[blurred])
            out = out ** rng.uniform(0.8, 1.25, (len(out), 1))
            out *= c.brightness[client][:, None]
            if change.kind == "dim":
                out *= (1 - level)[:, None]
        else:
            out *= rng.normal(1.0, 0.03, out.shape)
            if change.kind == "rescale":  # one lab's unit change, everywhere: three measurements scaled up
                out[:, :3] *= (1 + level)[:, None]
        noise = c.noise[client] + (level if change.kind == "noise" else 0.0)
        out += rng.normal(0, 1, out.shape) * noise[:, None]
        return np.clip(out, 0, 1).astype(np.float32)

    def _attack_queries(self, attack: Attack) -> tuple[np.ndarray, float]:
        from monitor.sim.attacks import record_attack, white_box

        rng, pools = np.random.default_rng(self.family.seed * 1000 + len(attack.name)), self.pools
        if not attack.black_box:
            sources = pools["x"][rng.choice(len(pools["x"]), attack.sources)]
            adversarial = white_box(self.model, sources, attack.method, attack.eps, seed=self.family.seed)
            before = self.model.forward(sources).probs.argmax(axis=1)
            return np.round(adversarial, 3), float((self.model.forward(adversarial).probs.argmax(axis=1)
                                                    != before).mean())
        streams, wins = [], 0
        for i in range(attack.sources):
            source = pools["x"][rng.integers(len(pools["x"]))]
            stream, won = record_attack(self.model, attack.method, source, seed=self.family.seed + i, budget=1500,
                                        image_shape=(1, 8, 8) if self.image else None)
            streams.append(stream)
            wins += won
        return np.round(np.vstack(streams), 3), wins / attack.sources

    def _events(self, times: np.ndarray, owners: list[str], inputs: np.ndarray, labels: np.ndarray | None
                ) -> list[tuple[float, dict]]:
        out = self.model.forward(np.asarray(inputs, np.float32))
        labelled = self.rng.random(len(times)) < self.family.labelled_share
        return [(float(t), self._doc(owners[i], inputs[i], out, i,
                                     int(labels[i]) if labels is not None and labelled[i] and labels[i] >= 0 else None))
                for i, t in enumerate(times)]

    def _doc(self, client: str, x: np.ndarray, out: Forward, i: int, truth: int | None) -> dict:
        label = int(out.probs[i].argmax())
        doc: dict[str, Any] = {
            "model": f"{self.family.data}-mlp", "model_version": str(self.family.seed), "client_id": client,
            "input": {"features": np.ascontiguousarray(x, np.float32)},
            "prediction": {"label": str(label), "confidence": round(float(out.probs[i, label]), 5),
                           "logits": np.round(out.logits[i], 4).tolist()}}
        if self.image:  # the digits service also logs its penultimate layer, as binary float32
            doc["input"]["embedding"] = {"b64": base64.b64encode(out.embedding[i].astype("<f4").tobytes()).decode(),
                                         "dtype": "float32"}
        if truth is not None:
            doc["ground_truth"] = str(truth)
        return doc

    def reference(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """What the model was trained on: the raw inputs, and for digits the embeddings and logits."""
        x = self.pools["x_train"]
        out = self.model.forward(x)
        labels = out.probs.argmax(axis=1).astype(str)
        spaces: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {"features": (x, labels, None)}
        if self.image:
            spaces["embedding"] = (out.embedding, labels, out.logits)
        return spaces


class _TextWorld(_World):
    """Support messages and the text classifier; inputs are logged as text with the model's embedding."""

    @classmethod
    def make(cls, family: Family) -> _TextWorld:
        from monitor.sim.text import INTENTS, TextModel, support_messages

        rng = np.random.default_rng(family.seed + 1)
        texts, labels = support_messages(rng, 6000, typo=0.005)
        model = TextModel.train(texts, labels, seed=family.seed)
        popular, _ = support_messages(rng, family.popular_items, typo=0.0)
        pools = {"texts": texts, "labels": labels, "popular": popular}
        world = cls(family, model, pools, len(INTENTS))
        world.typo = rng.uniform(0.0, 0.03, family.clients)
        return world

    typo: np.ndarray

    def _benign_events(self, times: np.ndarray, client: np.ndarray, kind: np.ndarray) -> list[tuple[float, dict]]:
        from monitor.sim.text import support_messages

        rng, c = self.rng, self.clients
        cumulative = np.cumsum(c.classes[client], axis=1)
        intents = (rng.random((len(times), 1)) > cumulative).sum(axis=1)
        launch = self.family.change.level(times / 3600.0)
        texts, labels = support_messages(rng, len(times), typo=self.typo[client], new_product=launch, intents=intents)
        weights = 1.0 / np.arange(1, len(self.pools["popular"]) + 1)
        for i in np.flatnonzero(kind == 1):  # viral messages, pasted as they are (sometimes with a greeting)
            text = self.pools["popular"][rng.choice(len(weights), p=weights / weights.sum())]
            texts[i] = text if rng.random() < 0.7 else f"hi {text}"
            labels[i] = -1
        for i in np.flatnonzero(kind == 2):
            earlier = np.flatnonzero(client[:i] == client[i])
            if len(earlier):
                texts[i] = texts[earlier[-1]]
        return self._events(times, [c.ids[k] for k in client], texts, labels)

    def _attack_queries(self, attack: Attack) -> tuple[list[str], float]:
        from monitor.sim.text import word_swap_attack

        rng = np.random.default_rng(self.family.seed * 1000 + len(attack.name))
        queries, wins = [], 0
        for i in range(attack.sources):
            text = self.pools["texts"][rng.integers(len(self.pools["texts"]))]
            sent, won = word_swap_attack(self.model, text, seed=self.family.seed + i)
            queries += sent
            wins += won
        return queries, wins / attack.sources

    def _events(self, times: np.ndarray, owners: list[str], inputs: Any, labels: np.ndarray | None
                ) -> list[tuple[float, dict]]:
        out = self.model.forward(list(inputs))
        labelled = self.rng.random(len(times)) < self.family.labelled_share
        docs = []
        for i, t in enumerate(times):
            label = int(out.probs[i].argmax())
            doc: dict[str, Any] = {
                "model": "support-intents", "model_version": str(self.family.seed), "client_id": owners[i],
                "input": {"text": inputs[i], "embedding": np.round(out.embedding[i], 5).tolist()},
                "prediction": {"label": str(label), "confidence": round(float(out.probs[i, label]), 5),
                               "logits": np.round(out.logits[i], 4).tolist()}}
            if labels is not None and labelled[i] and labels[i] >= 0:
                doc["ground_truth"] = str(int(labels[i]))
            docs.append((float(t), doc))
        return docs

    def reference(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        out = self.model.forward(self.pools["texts"])
        return {"embedding": (out.embedding, out.probs.argmax(axis=1).astype(str), out.logits)}


def _key(seed: str) -> str:
    """An API key like any other (attackers' keys look like benign ones)."""
    return f"key_{hashlib.blake2b(seed.encode(), digest_size=5).hexdigest()}"


def _warp(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Small rotations and zooms of 8x8 images (bilinear), one random affine map per image."""
    from scipy import ndimage

    out = np.empty_like(images)
    angles = np.deg2rad(rng.uniform(-6, 6, len(images)))
    zooms = rng.uniform(0.95, 1.05, len(images))
    for i, (image, angle, zoom) in enumerate(zip(images.reshape(-1, 8, 8), angles, zooms, strict=True)):
        c, s = np.cos(angle) / zoom, np.sin(angle) / zoom
        matrix = np.array([[c, -s], [s, c]])
        offset = np.array([3.5, 3.5]) - matrix @ np.array([3.5, 3.5])
        out[i] = ndimage.affine_transform(image, matrix, offset, order=1, mode="constant").ravel()
    return out


def _elastic(rng: np.random.Generator, images: np.ndarray, alpha: float = 0.5, sigma: float = 1.5) -> np.ndarray:
    """Elastic deformation of 8x8 images: a smooth random displacement field per image, at most ``alpha``
    pixels (bilinear)."""
    from scipy import ndimage

    n = len(images)
    field = ndimage.gaussian_filter(rng.normal(0, 1, (n, 2, 8, 8)), sigma=(0, 0, sigma, sigma))
    field *= alpha / np.maximum(np.abs(field).max(axis=(1, 2, 3), keepdims=True), 1e-6)
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    out = np.empty((n, 64), np.float32)
    for i, image in enumerate(images.reshape(n, 8, 8)):
        coords = np.array([rows + field[i, 0], cols + field[i, 1]])
        out[i] = ndimage.map_coordinates(image, coords, order=1, mode="constant").ravel()
    return out


def _blur(images: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(images.reshape(-1, 8, 8), sigma=(0, 0.6, 0.6)).reshape(len(images), 64)


def chunks(records: list[bytes], size: int = 4096) -> Iterator[list[bytes]]:
    for start in range(0, len(records), size):
        yield records[start:start + size]
