"""What a client decodes from ``encoding_format``: float and base64 carry the very same float32 values."""

from __future__ import annotations

import base64
import json

import numpy as np

from embedserve.api.encoding import dumps, embedding_items, from_base64, to_base64

# Values a float32 cannot hold exactly as a short decimal, a negative zero, and extremes.
VECTORS = np.array([[0.1, -0.0, 1e-38, 3.4e38], [1 / 3, -2.5, 7.0, 1e-45]], dtype=np.float32)


def test_base64_is_little_endian_float32_bytes_of_the_vector() -> None:
    text = to_base64(VECTORS[0])
    assert base64.b64decode(text) == VECTORS[0].astype("<f4").tobytes()
    assert len(base64.b64decode(text)) == 4 * VECTORS.shape[1]
    assert from_base64(text).tobytes() == VECTORS[0].tobytes()


def test_float_and_base64_responses_decode_to_the_same_bits() -> None:
    floats = json.loads(dumps({"data": embedding_items(VECTORS, encoding_format="float")}))["data"]
    b64 = json.loads(dumps({"data": embedding_items(VECTORS, encoding_format="base64")}))["data"]
    for row, as_float, as_b64 in zip(VECTORS, floats, b64, strict=True):
        assert np.array(as_float["embedding"], dtype=np.float32).tobytes() == row.tobytes()
        assert from_base64(as_b64["embedding"]).tobytes() == row.tobytes()


def test_items_are_embedding_objects_indexed_in_input_order() -> None:
    items = json.loads(dumps({"data": embedding_items(VECTORS, encoding_format="float")}))["data"]
    assert [(item["object"], item["index"]) for item in items] == [("embedding", 0), ("embedding", 1)]
    assert isinstance(items[0]["embedding"], list) and len(items[0]["embedding"]) == 4


def test_a_float_is_printed_as_the_float64_of_the_float32_value() -> None:
    """0.1 as float32 is 0.10000000149011612: that is the number on the wire, not a rounded 0.1."""
    body = dumps({"data": embedding_items(np.array([[0.1]], dtype=np.float32), encoding_format="float")})
    assert json.loads(body)["data"][0]["embedding"] == [0.10000000149011612]


def test_a_non_contiguous_or_wider_array_is_encoded_as_float32() -> None:
    wide = np.asfortranarray(VECTORS.astype(np.float64))
    b64 = embedding_items(wide, encoding_format="base64")  # type: ignore[arg-type]
    assert from_base64(b64[1]["embedding"]).tobytes() == VECTORS[1].tobytes()
