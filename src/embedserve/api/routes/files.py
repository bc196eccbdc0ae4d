"""``/v1/files``: upload (multipart, purpose ``batch``), list, retrieve, ``/content``, delete (OpenAI's shapes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile

from embedserve.api.batch_deps import get_batches, get_owner
from embedserve.batch.files import FileRecord
from embedserve.batch.owner import Owner
from embedserve.errors import InvalidRequestError, RequestTooLargeError

router = APIRouter(tags=["files"])
OwnerDep = Annotated[Owner, Depends(get_owner)]


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


@router.post("/v1/files")
async def upload_file(request: Request, owner: OwnerDep) -> JSONResponse:
    """Upload a JSONL file of batch requests (multipart form: ``file`` and ``purpose=batch``)."""
    batches = await get_batches(request)
    limit = batches.files.limits.max_bytes
    async with request.form(max_files=1, max_fields=8) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("Send the file as multipart form field 'file'.", param="file")
        if not isinstance(purpose, str):
            raise InvalidRequestError("'purpose' is required ('batch').", param="purpose")
        if upload.size is not None and upload.size > limit:
            raise RequestTooLargeError(
                f"The file is {upload.size} bytes, larger than this server's limit of {limit} bytes per batch file.",
                param="file",
            )
        record = await batches.files.upload(
            upload.file, owner=owner, purpose=purpose, filename=upload.filename or "upload.jsonl"
        )
    return JSONResponse(file_object(record))


@router.get("/v1/files")
async def list_files(
    request: Request,
    owner: OwnerDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: str | None = None,
) -> JSONResponse:
    records = await (await get_batches(request)).files.list(owner=owner, purpose=purpose, limit=limit + 1, after=after)
    data = [file_object(r) for r in records[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "has_more": len(records) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.get("/v1/files/{file_id}")
async def retrieve_file(file_id: str, request: Request, owner: OwnerDep) -> JSONResponse:
    return JSONResponse(file_object(await (await get_batches(request)).files.get(file_id, owner=owner)))


@router.get("/v1/files/{file_id}/content")
async def file_content(file_id: str, request: Request, owner: OwnerDep) -> FileResponse:
    files = (await get_batches(request)).files
    record = await files.get(file_id, owner=owner)
    return FileResponse(files.path_of(record), media_type="application/jsonl", filename=record.filename)


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request, owner: OwnerDep) -> JSONResponse:
    batches = await get_batches(request)
    record = await batches.files.get(file_id, owner=owner)
    await batches.files.delete(record.id, owner=owner)  # 400 while an active batch reads it
    return JSONResponse({"id": record.id, "object": "file", "deleted": True})
