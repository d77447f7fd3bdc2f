#!/usr/bin/env bash
# Build ulcmod with its CUDA module on a GPU machine, then run the GPU tests and the GPU benchmarks.
#
#   bash benchmarks/gpu_check.sh [SRC] [WHEELS] [MODE]
#
# SRC: the source tree (default: this repository). WHEELS: a folder of wheels to install first
# (scipy-openblas32 where the machine lacks it), or "". MODE: "tests" (GPU tests and the quick
# benchmark), "full" (GPU tests, the full benchmark and discover end to end) or "bench" (the
# full benchmark and discover end to end).
# Logs and results go to $OUT (default SRC/gpu-out). Builds for the GPU's own architecture (90).
set -uo pipefail
SRC=$(cd "${1:-$(dirname "$0")/..}" && pwd)
WHEELS=${2:-}
MODE=${3:-tests}
OUT=${OUT:-$SRC/gpu-out}
ARCH=${ULCMOD_CUDA_ARCH:-90}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
{ nvidia-smi; nvcc --version; $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } > "$OUT/machine.txt" 2>&1
if [ -n "$WHEELS" ]; then $PY -m pip install -q --no-index --no-deps "$WHEELS"/*.whl || exit 1; fi
cd "$SRC" || exit 1
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
t0=$(date +%s)
if ! $PY -m pip install --no-build-isolation --no-deps -v . -Ccmake.define.ULCMOD_ENABLE_CUDA=ON \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH" -Cbuild-dir=/tmp/ulcmod-build > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s"
$PY -c "import ulcmod; print(ulcmod.build_info())"
status=0
if [ "$MODE" != bench ]; then
  $PY -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py tests/test_device.py tests/test_model_devices.py 2>&1 \
    | tee "$OUT/tests.log" | tail -60
  status=${PIPESTATUS[0]}
fi
if [ "$MODE" = tests ]; then
  $PY benchmarks/bench_gpu.py --quick 2>&1 | tee "$OUT/bench.log" | tail -30
else
  $PY benchmarks/bench_gpu.py 2>&1 | tee "$OUT/bench.log" | tail -40
  $PY benchmarks/bench_discover_gpu.py 2>&1 | tee "$OUT/discover.log" | tail -12
fi
cp benchmarks/results/gpu*.md benchmarks/results/discover_gpu*.md "$OUT/" 2>/dev/null
exit "$status"
