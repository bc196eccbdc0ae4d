#!/usr/bin/env bash
# Here, before a GPU session: put what the GPU machine lacks into .gpu/ (git-ignored through .git/info/exclude), so
# that one call of the device tool can run benchmarks/gpu/session.sh with carry [".gpu"]. See docs/development.md.
#   - the wheels of embedserve's web and store dependencies that the GPU image does not have, at the versions this
#     checkout's venv runs (the image brings torch, numpy, tokenizers, safetensors, httpx, onnx...: KINDS.md);
#   - the bge-large-en-v1.5 reference files (../shared is not carried), placed beside the repo there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >> "$exclude"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/reference
# web, store and IPC dependencies (and theirs) missing from the GPU image, or needed newer than it may have
NEEDED='fastapi|starlette|uvicorn|pydantic|pydantic[-_]core|pydantic[-_]settings|annotated[-_]types|typing[-_]inspection'
NEEDED+='|typing[-_]extensions|anyio|opentelemetry[-_]api'
NEEDED+='|sqlalchemy|greenlet|aiosqlite|asyncpg|alembic|mako|limits|deprecated|redis|orjson|python[-_]multipart|pyzmq'
NEEDED+='|pytest[-_]asyncio|python[-_]dotenv|httptools|websockets|watchfiles'
mapfile -t pins < <("$PY" -m pip freeze | grep -i -E "^($NEEDED)==")
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .gpu/whl "${pins[@]}"
cp -r ../shared/reference/bge-large-en-v1.5 ../shared/reference/seed-example-response.json .gpu/reference/
echo "${#pins[@]} pins, $(ls .gpu/whl | wc -l) wheels; .gpu is $(du -sh .gpu | cut -f1) (a device call carries 64 MiB in all)"
