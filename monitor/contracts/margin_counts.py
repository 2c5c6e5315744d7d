"""The ``margin-counts`` message: what each ingest worker's traffic adds to the margin population, for the others.

Every ingest worker ranks each event's margin against the margins of the population (``monitor.detect.margin_ranks``).
Alone, a worker knows only its own partitions' traffic; with this message every worker adds every other worker's
counts, so that all rank against the whole stream, as replay does. Events are counted per (bucket, class, score band,
margin bin), and a worker sends a bucket's counts once the bucket has closed (in the transaction of the batch that
closed it): the messages' size follows the cells a minute touched, not its events. Binary: a JSON header (sender,
and per model its classes and cell count), then per model five arrays.

>>> import numpy as np
>>> part = MarginCounts("m", ("1", "7"), np.array([60, 120]), np.array([1, 0]), np.array([0, 2]),
...                     np.array([36, 8]), np.array([2.0, 1.0]))
>>> back = MarginCountsBatch.decode(MarginCountsBatch("ingest-0-5f2a", [part]).encode())
>>> back.sender, back.parts[0].labels, back.parts[0].bucket.tolist(), back.parts[0].count.tolist()
('ingest-0-5f2a', ('1', '7'), [60, 120], [2.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.contracts.framing import FrameReader, framed, refusing
from monitor.errors import WireError

VERSION = 1
#: Each cell's columns on the wire, in order, with their types.
_COLUMNS = {"bucket": "<i8", "label": "<i4", "band": "<i2", "bin": "<i2", "count": "<f8"}
CELL_BYTES = 24


@dataclass(frozen=True)
class MarginCounts:
    """Events of one model counted by (bucket, class, score band, margin bin); ``label`` indexes ``labels``."""

    model: str
    labels: tuple[str, ...]
    bucket: np.ndarray  # int64: the bucket's start
    label: np.ndarray  # int64
    band: np.ndarray  # int64
    bin: np.ndarray  # int64
    count: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.count)

    def take(self, rows: slice | np.ndarray) -> MarginCounts:
        """The given cells (a slice, indices or a boolean mask)."""
        return MarginCounts(self.model, self.labels, self.bucket[rows], self.label[rows], self.band[rows],
                            self.bin[rows], self.count[rows])


@dataclass(frozen=True)
class MarginCountsBatch:
    sender: str  # the worker process that counted them (a worker skips its own: it added them as it counted them)
    parts: list[MarginCounts]

    def chunks(self, max_bytes: int = 512 * 1024) -> list[MarginCountsBatch]:
        """The message as messages of at most about ``max_bytes`` each (under Kafka's 1 MB limit), every cell in one.

        >>> part = MarginCounts("m", ("1",), *(np.zeros(100, np.int64),) * 4, np.ones(100))
        >>> [sum(map(len, c.parts)) for c in MarginCountsBatch("w", [part, part]).chunks(max_bytes=24 * 80)]
        [80, 80, 40]
        """
        room = max(1, max_bytes // CELL_BYTES)
        out: list[list[MarginCounts]] = [[]]
        left = room
        for part in self.parts:
            start = 0
            while start < len(part):
                if not left:
                    out.append([])
                    left = room
                stop = min(len(part), start + left)
                out[-1].append(part.take(slice(start, stop)))
                left -= stop - start
                start = stop
        return [MarginCountsBatch(self.sender, parts) for parts in out if parts]

    def encode(self) -> bytes:
        header = [{"model": p.model, "labels": list(p.labels), "n": len(p)} for p in self.parts]
        blobs = [np.ascontiguousarray(getattr(p, name), dtype).tobytes()
                 for p in self.parts for name, dtype in _COLUMNS.items()]
        return framed({"v": VERSION, "sender": self.sender, "parts": header}, blobs)

    @classmethod
    def decode(cls, data: bytes) -> MarginCountsBatch:
        """A message from :meth:`encode`; one that does not decode, or whose cells fall outside its classes, raises
        ``WireError``."""
        with refusing("margin-counts"):
            frame = FrameReader(data, "margin-counts", VERSION)
            parts = []
            for p in frame.header["parts"]:
                n, labels = int(p["n"]), tuple(str(label) for label in p["labels"])
                columns = {name: frame.array(dtype, n).astype(np.float64 if name == "count" else np.int64)
                           for name, dtype in _COLUMNS.items()}
                if n and not (0 <= columns["label"].min() and columns["label"].max() < len(labels)):
                    raise WireError("margin-counts cells name classes the message does not list")
                parts.append(MarginCounts(str(p["model"]), labels, **columns))
            frame.end()
        return cls(str(frame.header["sender"]), parts)
