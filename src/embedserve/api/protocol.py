"""The OpenAI wire format for embeddings and models, as pydantic models (the only pydantic outside settings)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

InputType = Literal["query", "search_query", "document", "passage", "search_document"]


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="ignore")

    input: Annotated[
        # Strict: JSON true/false are not token ids (lax pydantic would read them as 1 and 0).
        str | list[str] | list[StrictInt] | list[list[StrictInt]],
        Field(description="A string, a list of strings, a list of token ids, or a list of token-id lists."),
    ]
    model: str | None = Field(default=None, description="The served model name; defaults to the only model.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, description="Accepted only when equal to the model's width.")
    user: str | None = None
    input_type: InputType | None = Field(
        default=None,
        description="`query`/`search_query` prepends BGE's retrieval instruction; documents get nothing.",
    )
    truncate: bool | None = Field(
        default=None,
        description="Truncate inputs longer than the model's context instead of refusing them (400).",
    )


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class MetaUsage(BaseModel):
    credits_used: int


class Meta(BaseModel):
    usage: MetaUsage


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: Usage
    id: str
    created: int
    meta: Meta


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "embedserve"
    dimensions: int | None = None
    max_input_tokens: int | None = None
    random_weights: bool = Field(
        default=False,
        description="embedserve extension: true when the server runs seeded random weights (--load-format dummy); "
        "its vectors carry no meaning",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(BaseModel):
    """``POST /tokenize``, in Hugging Face TEI's shape (``inputs``; OpenAI-style ``input`` is accepted too)."""

    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str] | None = Field(default=None, description="A text or a list of texts.")
    input: str | list[str] | None = Field(default=None, description="Alias of `inputs`.")
    add_special_tokens: bool = Field(default=True, description="Include [CLS] and [SEP], as embeddings count them.")
    input_type: InputType | None = Field(
        default=None, description="`query`/`search_query`: show the tokens with BGE's retrieval instruction."
    )
    model: str | None = None


class TokenObject(BaseModel):
    id: int
    text: str = Field(description="The caller's text at [start, stop); the token itself for special tokens.")
    special: bool
    start: int | None = Field(description="Character (Unicode code point) offset, not bytes; null for special tokens")
    stop: int | None


class TokenizeResponse(BaseModel):
    model: str
    offsets: Literal["characters"] = "characters"
    tokens: list[list[TokenObject]] = Field(description="Per input, its tokens (TEI's /tokenize response).")
    count: list[int] = Field(description="Per input, its number of tokens (what embeddings would count).")


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ids: list[int] | list[list[int]] = Field(description="The model's token ids, or a list of such lists.")
    skip_special_tokens: bool = True
    model: str | None = None


class DecodeResponse(BaseModel):
    model: str
    texts: list[str] = Field(description="Per id list, its text.")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(*, message: str, type: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
