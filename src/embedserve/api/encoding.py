"""Rendering vectors on the wire: JSON floats or base64 of little-endian float32 bytes.

Both are exact: a JSON float is the float64 value of the float32 (as the seed's response shows them), so a client
gets the very same numbers from either path, and casting to float32 gives the same bits as decoding the base64.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

EncodingFormat = Literal["float", "base64"]


def to_base64(row: npt.NDArray[np.float32]) -> str:
    return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")


def from_base64(text: str) -> npt.NDArray[np.float32]:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def embedding_items(vectors: npt.NDArray[np.float32], *, encoding_format: EncodingFormat) -> list[dict[str, Any]]:
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    if encoding_format == "base64":
        return [{"object": "embedding", "index": i, "embedding": to_base64(r)} for i, r in enumerate(rows)]
    wide = rows.astype(np.float64)  # exact widening; orjson prints the shortest repr that round-trips
    return [{"object": "embedding", "index": i, "embedding": r} for i, r in enumerate(wide)]


def dumps(payload: dict[str, Any]) -> bytes:
    """orjson serialises numpy rows directly, many times faster than json + tolist()."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
