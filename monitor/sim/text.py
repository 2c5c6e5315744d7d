"""A text classifier and its traffic, for the text scenario family: support messages in four intents,
written from templates with synonyms, client styles (typos, case, filler words) and a vocabulary that
changes when a new product launches; and a query-based word-substitution attack against the model.

>>> rng = np.random.default_rng(0)
>>> texts, labels = support_messages(rng, 600)
>>> model = TextModel.train(texts, labels, seed=0)
>>> out = model.forward(texts[:3])
>>> out.embedding.shape[1], out.probs.shape, bool(model.accuracy(texts[:300], labels[:300]) > 0.8)
(48, (3, 4), True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.sim.toymodel import Forward, NumpyMlp

INTENTS = ("billing", "technical", "shipping", "account")

SYNONYMS = {
    "charged": ["billed", "invoiced", "debited"], "twice": ["two times", "double"], "refund": ["reimbursement",
    "money back"], "invoice": ["bill", "receipt"], "payment": ["transaction", "charge"], "card": ["credit card",
    "visa"], "broken": ["faulty", "defective", "not working"], "crashes": ["freezes", "hangs", "stops"],
    "error": ["fault", "problem", "bug"], "slow": ["sluggish", "laggy"], "package": ["parcel", "box", "order"],
    "late": ["delayed", "overdue"], "delivery": ["shipment", "shipping"], "lost": ["missing", "gone"],
    "password": ["passcode", "login"], "account": ["profile", "user account"], "locked": ["blocked", "disabled"],
    "email": ["e-mail", "mail address"], "help": ["assist", "support"], "please": ["pls", "kindly"],
}
TEMPLATES = {
    "billing": ["i was charged twice for my {product}", "please send the invoice for my last payment",
                "i want a refund for the {product} subscription", "my card was charged but the payment failed",
                "why is my invoice higher this month", "the payment for {product} went through twice"],
    "technical": ["the {product} crashes when i open the settings", "my {product} is broken after the update",
                  "i get an error every time i start the {product}", "the {product} is very slow since yesterday",
                  "the app crashes on my phone", "there is an error when i connect the {product}"],
    "shipping": ["my package is late", "the delivery of my {product} is late by a week", "the package was lost",
                 "where is my delivery of the {product}", "tracking says the package arrived but it did not",
                 "my {product} delivery is lost somewhere"],
    "account": ["i cannot reset my password", "my account is locked", "please help me change my email",
                "i forgot the password for my account", "someone changed my account email",
                "my account got locked after the {product} update"],
}
PRODUCTS = ["router", "tablet", "speaker", "camera", "thermostat", "watch"]
NEW_PRODUCTS = ["nimbus x router", "aero tab pro", "hearth hub"]  # launched during the day
FILLERS = ["hi", "hello", "thanks", "asap", "urgent", "again", "today", "guys"]


def _render(rng: np.random.Generator, intent: str, typo: float, new_product: float) -> str:
    template = TEMPLATES[intent][rng.integers(len(TEMPLATES[intent]))]
    products = NEW_PRODUCTS if rng.random() < new_product else PRODUCTS
    words = template.format(product=products[rng.integers(len(products))]).split()
    words = [SYNONYMS[w][rng.integers(len(SYNONYMS[w]))] if w in SYNONYMS and rng.random() < 0.4 else w
             for w in words]
    if rng.random() < 0.5:
        words.insert(0 if rng.random() < 0.5 else len(words), FILLERS[rng.integers(len(FILLERS))])
    text = " ".join(words)
    if typo > 0:
        chars = list(text)
        for i in np.flatnonzero(rng.random(len(chars)) < typo):
            chars[i] = "abcdefghijklmnopqrstuvwxyz"[rng.integers(26)] if chars[i] != " " else " "
        text = "".join(chars)
    return text


def support_messages(rng: np.random.Generator, n: int, typo: float | np.ndarray = 0.0,
                     new_product: float | np.ndarray = 0.0, intents: np.ndarray | None = None
                     ) -> tuple[list[str], np.ndarray]:
    """``n`` messages and their intents (indices into ``INTENTS``); ``typo`` is a per-character typo rate and
    ``new_product`` the share naming a newly launched product (scalars or one value per message)."""
    labels = rng.integers(len(INTENTS), size=n) if intents is None else np.asarray(intents)
    typos, news = np.broadcast_to(typo, (n,)), np.broadcast_to(new_product, (n,))
    texts = [_render(rng, INTENTS[int(c)], float(t), float(p)) for c, t, p in zip(labels, typos, news, strict=True)]
    return texts, labels


@dataclass(frozen=True)
class TextModel:
    """Hashed word and character n-grams -> TF-IDF -> SVD (the logged 48-d sentence embedding) -> MLP."""

    vectorizer: Any
    tfidf: Any
    svd: Any
    head: NumpyMlp

    @classmethod
    def train(cls, texts: list[str], labels: np.ndarray, seed: int = 0, dim: int = 48) -> TextModel:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2**15, alternate_sign=False)
        tfidf = TfidfTransformer().fit(vectorizer.transform(texts))
        svd = TruncatedSVD(n_components=dim, random_state=seed).fit(tfidf.transform(vectorizer.transform(texts)))
        embedding = cls._embed(vectorizer, tfidf, svd, texts)
        return cls(vectorizer, tfidf, svd, NumpyMlp(*NumpyMlp.fit_weights(embedding, labels, 32, seed, max_iter=200)))

    @staticmethod
    def _embed(vectorizer: Any, tfidf: Any, svd: Any, texts: list[str]) -> np.ndarray:
        return np.asarray(svd.transform(tfidf.transform(vectorizer.transform(texts))), np.float32)

    def forward(self, texts: list[str]) -> Forward:
        """The logged embedding is the SVD vector; logits and probabilities come from the MLP head."""
        embedding = self._embed(self.vectorizer, self.tfidf, self.svd, texts)
        head = self.head.forward(embedding)
        return Forward(embedding, head.logits, head.probs)

    def accuracy(self, texts: list[str], labels: np.ndarray) -> float:
        return float((self.forward(texts).probs.argmax(axis=1) == labels).mean())


def word_swap_attack(model: TextModel, text: str, budget: int = 400, seed: int = 0) -> tuple[list[str], bool]:
    """A query-based greedy word substitution (in the spirit of TextFooler, black-box): at each step try
    every synonym (and a few random words) at every position, keep the swap that lowers the predicted
    intent's probability most, until the intent flips or the budget is spent. Returns every query sent."""
    rng = np.random.default_rng(seed)
    words = text.split()
    label = int(model.forward([text]).probs.argmax())
    queries: list[str] = []
    vocabulary = sorted({w for ws in SYNONYMS.values() for s in ws for w in s.split()} | set(SYNONYMS))
    for _ in range(len(words)):
        candidates = []
        for i, word in enumerate(words):
            options = SYNONYMS.get(re.sub(r"[^a-z]", "", word), []) + list(rng.choice(vocabulary, 2))
            candidates += [" ".join(words[:i] + [o] + words[i + 1:]) for o in options]
        candidates = candidates[:max(0, budget - len(queries))]
        if not candidates:
            break
        queries += candidates
        probs = model.forward(candidates).probs
        best = int(probs[:, label].argmin())
        words = candidates[best].split()
        if probs[best].argmax() != label:
            return queries, True
    return queries, False
