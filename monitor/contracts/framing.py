"""Binary messages (``score-requests``, ``match-requests``): a 4-byte big-endian header length, a JSON header,
then raw arrays; one framing, and one way to refuse a message that does not decode (a ``WireError``).

>>> import numpy as np
>>> data = framed({"v": 1, "n": 2}, [np.arange(2, dtype="<u8").tobytes()])
>>> with refusing("demo"):
...     frame = FrameReader(data, "demo", version=1)
...     values = frame.array("<u8", frame.header["n"]); frame.end()
>>> values.tolist()
[0, 1]
>>> with refusing("demo"):
...     FrameReader(data, "demo", version=2)
Traceback (most recent call last):
...
monitor.errors.WireError: demo version 1; this build reads 2
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson

from monitor.errors import WireError

_LENGTH = struct.Struct(">I")


def framed(header: dict[str, Any], blobs: list[bytes]) -> bytes:
    head = orjson.dumps(header)
    return _LENGTH.pack(len(head)) + head + b"".join(blobs)


class FrameReader:
    """The header of a framed message (its version checked), and its arrays read one after the other."""

    def __init__(self, data: bytes, name: str, version: int) -> None:
        (length,) = _LENGTH.unpack_from(data)
        self.header: dict[str, Any] = orjson.loads(data[4:4 + length])
        if self.header["v"] != version:
            raise WireError(f"{name} version {self.header['v']}; this build reads {version}")
        self.data, self.name, self.offset = data, name, 4 + length

    def array(self, dtype: Any, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype, count, self.offset)
        self.offset += values.nbytes
        return values

    def raw(self, count: int) -> bytes:
        """The next ``count`` bytes as they are (a message carried inside this one)."""
        return self.array(np.uint8, count).tobytes()

    def end(self) -> None:
        """Every byte read: a message with more is refused."""
        if self.offset != len(self.data):
            raise WireError(f"{self.name} message has {len(self.data) - self.offset} trailing bytes")


@contextmanager
def refusing(name: str) -> Iterator[None]:
    """Whatever a malformed message raises while it is decoded becomes a ``WireError`` naming the message."""
    try:
        yield
    except WireError:
        raise
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WireError(f"invalid {name} message: {exc}") from None
