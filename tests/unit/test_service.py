"""EmbeddingService on the real Engine (fake backend, real bge tokenizer): the four input forms, the limits it
refuses, and every admission settled once, refunded when inference fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from embedserve import errors
from embedserve.accounting.open_gateway import OpenGateway
from embedserve.accounting.values import ANONYMOUS, Admission
from embedserve.engine.engine import Engine
from embedserve.service import EmbeddingService, EmbedRequest, RawInput
from tests.gateway_stub_engine import stub_engine

LAURA = "Laura is a DJ."
LAURA_IDS = [101, 6874, 2003, 1037, 6520, 1012, 102]  # [CLS] laura is a dj . [SEP]
LAURA_CL100K = [77560, 374, 264, 22102, 13]  # OpenAI's cl100k_base ids of the same text


class RecordingGateway(OpenGateway):
    """Prices like the open gateway and remembers how each admission was settled."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: list[tuple[Admission, bool]] = []

    async def settle(self, admission: Admission, *, ok: bool) -> None:
        self.settled.append((admission, ok))


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    eng = stub_engine()
    await eng.start()
    yield eng
    await eng.stop()


@pytest.fixture
def gateway() -> RecordingGateway:
    return RecordingGateway()


@pytest.fixture
def service(engine: Engine, gateway: RecordingGateway) -> EmbeddingService:
    return EmbeddingService(engine=engine, gateway=gateway, max_inputs=3)


def request(raw: RawInput, *, input_type: str | None = None, truncate: bool | None = None) -> EmbedRequest:
    return EmbedRequest(input=raw, request_id="req-1", input_type=input_type, truncate=truncate)


@pytest.mark.parametrize(
    ("raw", "counts", "kinds"),
    [
        (LAURA, (7,), ()),
        ([LAURA, "What does Laura do?"], (7, 7), ()),
        (LAURA_IDS, (7,), ("wordpiece",)),
        ([LAURA_IDS, LAURA_CL100K], (7, 7), ("wordpiece", "tiktoken")),
    ],
)
async def test_the_four_input_forms_embed_with_exact_token_counts(
    service: EmbeddingService, raw: RawInput, counts: tuple[int, ...], kinds: tuple[str, ...]
) -> None:
    result = await service.embed(request(raw), ANONYMOUS)
    assert result.token_counts == counts and result.token_ids == kinds
    assert result.vectors.shape == (len(counts), 1024) and result.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0)
    assert result.credits_used == 1 and result.model == "BAAI/bge-large-en-v1.5"


async def test_text_ids_and_cl100k_ids_of_one_text_give_one_vector(service: EmbeddingService) -> None:
    text = await service.embed(request(LAURA), ANONYMOUS)
    ids = await service.embed(request([LAURA_IDS, LAURA_CL100K]), ANONYMOUS)
    assert np.array_equal(ids.vectors, np.concatenate([text.vectors, text.vectors]))


async def test_a_query_gets_the_instruction_after_cls_for_text_and_ids_alike(service: EmbeddingService) -> None:
    plain = await service.prepare(request(LAURA))
    (text,) = (await service.prepare(request(LAURA, input_type="query"))).encodings
    (ids,) = (await service.prepare(request(LAURA_IDS, input_type="search_query"))).encodings
    assert text.ids == ids.ids and text.length > plain.encodings[0].length
    assert text.ids[0] == 101 and text.ids[-len(LAURA_IDS) + 1 :] == tuple(LAURA_IDS[1:])


@pytest.mark.parametrize(
    ("embed", "error", "fragment"),
    [
        (request([]), errors.InvalidInputError, "'input' must not be empty."),
        (request(["a", "b", "c", "d"]), errors.InvalidInputError, "'input' has 4 items; this server accepts at most 3"),
        (request(["a", ""]), errors.InvalidInputError, "input[1] is an empty string."),
        (request("word " * 600), errors.ContextLengthExceededError, "input[0] has 602 tokens, more than the model's"),
        (request("x" * 51201), errors.ContextLengthExceededError, "refuses strings over 51200 characters"),
        (request([[101, 30522, 102]]), errors.InvalidInputError, "token id 30522, outside this model's vocabulary"),
        (request([[200000]]), errors.InvalidInputError, "token id 200000, which is not a cl100k_base token"),
        (
            EmbedRequest(input=LAURA, request_id="r", model="text-embedding-3-small"),
            errors.ModelNotFoundError,
            "The model 'text-embedding-3-small' does not exist on this server",
        ),
        (EmbedRequest(input=LAURA, request_id="r", dimensions=256), errors.UnsupportedDimensionsError, "must be 1024"),
    ],
)
async def test_limits_are_refused_before_admission(
    service: EmbeddingService, gateway: RecordingGateway, embed: EmbedRequest, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as raised:
        await service.embed(embed, ANONYMOUS)
    assert fragment in str(raised.value)
    assert gateway.settled == []


async def test_truncate_cuts_an_over_long_text_to_the_context(service: EmbeddingService) -> None:
    result = await service.embed(request("word " * 600, truncate=True), ANONYMOUS)
    assert result.token_counts == (512,) and result.truncated == 1


async def test_success_is_charged_once(service: EmbeddingService, gateway: RecordingGateway) -> None:
    await service.embed(request(LAURA), ANONYMOUS)
    assert [(admission.tokens, admission.credits, ok) for admission, ok in gateway.settled] == [(7, 1, True)]


async def test_failed_inference_is_refunded_once(service: EmbeddingService, gateway: RecordingGateway) -> None:
    with pytest.raises(errors.EngineError):
        await service.embed(request("FAIL please"), ANONYMOUS)
    assert [ok for _, ok in gateway.settled] == [False]
