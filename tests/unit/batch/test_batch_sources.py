"""``batch run``'s reading of an OpenAI batch file refuses it as the server's validation does."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from embedserve.batch.sources import Source
from embedserve.errors import InvalidRequestError


def test_a_repeated_custom_id_refuses_the_file_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [{"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}} for cid in "aba"]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    with pytest.raises(InvalidRequestError, match="Line 3 repeats custom_id 'a'"):
        list(Source(path).lines())


def test_distinct_custom_ids_are_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [{"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}} for cid in "abc"]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    assert [line.custom_id for line in Source(path).lines(skip=1)] == ["b", "c"]
