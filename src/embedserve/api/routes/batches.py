"""``/v1/batches``: create, retrieve, cancel, list (``after``, ``limit``), in OpenAI's shapes and statuses.

Each batch object also carries ``progress`` (inputs and tokens total and done), an extension the SDKs keep.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from embedserve.api.batch_deps import get_batches, get_owner
from embedserve.batch.jobs import JobRecord
from embedserve.batch.owner import Owner

router = APIRouter(tags=["batches"])
OwnerDep = Annotated[Owner, Depends(get_owner)]
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512  # OpenAI's limits


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)

    @field_validator("metadata")
    @classmethod
    def _openai_metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if len(key) > MAX_METADATA_KEY:
                raise ValueError(f"keys are at most {MAX_METADATA_KEY} characters (one has {len(key)})")
            if len(item) > MAX_METADATA_VALUE:
                raise ValueError(f"values are at most {MAX_METADATA_VALUE} characters (one has {len(item)})")
        return value


def _time(value: float | None) -> int | None:
    return None if value is None else int(value)


def batch_object(job: JobRecord) -> dict[str, Any]:
    stamps = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
              "expired_at", "cancelling_at", "cancelled_at")  # fmt: skip
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": job.endpoint,
        "model": job.model,
        "errors": json.loads(job.errors) if job.errors else None,
        "input_file_id": job.input_file_id,
        "completion_window": job.completion_window,
        "status": job.status,
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        **{name: _time(getattr(job, name)) for name in stamps},
        "request_counts": {"total": job.total, "completed": job.completed, "failed": job.failed},
        "usage": {
            "input_tokens": job.tokens_done,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": job.tokens_done,
        },
        "metadata": json.loads(job.metadata) if job.metadata else None,
        "progress": {
            "inputs_total": job.inputs_total,
            "inputs_done": job.inputs_done,
            "tokens_total": job.tokens_total,
            "tokens_done": job.tokens_done,
            "credits_total": job.credits_total,
            "credits_used": job.credits_done,
        },
    }


@router.post("/v1/batches")
async def create_batch(body: BatchCreate, request: Request, owner: OwnerDep) -> JSONResponse:
    batches = await get_batches(request)
    source = await batches.files.get(body.input_file_id, owner=owner)  # 404 unless the caller owns it
    job = await batches.jobs.create(
        owner=owner, input_file_id=source.id, endpoint=body.endpoint, window=body.completion_window,
        metadata=body.metadata, chunk_lines=batches.chunk_lines,
    )  # fmt: skip
    batches.wake()
    return JSONResponse(batch_object(job))


@router.get("/v1/batches")
async def list_batches(
    request: Request, owner: OwnerDep, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> JSONResponse:
    records = await (await get_batches(request)).jobs.list(owner=owner, limit=limit + 1, after=after)
    data = [batch_object(r) for r in records[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(records) > limit,
        }
    )


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(batch_id: str, request: Request, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(batch_object(await (await get_batches(request)).jobs.get(batch_id, owner=owner)))


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request, owner: OwnerDep) -> JSONResponse:
    batches = await get_batches(request)
    job = await batches.jobs.cancel(batch_id, owner=owner)
    batches.wake()
    return JSONResponse(batch_object(job))
