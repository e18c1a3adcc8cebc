#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared run for a machine with CUDA (the session's device
# tool, whose image has torch, scikit-learn and pytest but not skorch).
#
# Before the run, once, in the repository root of the session's checkout (the versions this
# repository is tested with here; the image's python3 is 3.12):
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#         -d .whl skorch==1.4.0 scikit-learn==1.9.1 narwhals
# Then on the GPU machine, with ``.whl`` carried along (about 5 minutes of device time):
#     bash benchmarks/gpu_check.sh
# It runs the CUDA tests (fit, tracking and predict against the CPU, no synchronisation per
# step under torch.cuda.set_sync_debug_mode, pickling) and the host-read tests, then
# bench_gpu.py; logs and benchmarks/results/gpu.json go to $OUT (default /tmp/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the device image's python3 holds its CUDA torch
if [ -d .whl ]; then  # the carried wheels win over the image's packages
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl 2>&1 | tee "$OUT/pip.log" \
        || "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/skorch-*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch, sklearn, skorch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
 torch.cuda.is_available(), 'sklearn', sklearn.__version__, 'skorch', skorch.__version__)" | tee -a "$OUT/gpu.txt"
timeout 200 "$PY" -m pytest -q -p no:cacheprovider -rs --durations=12 tests/test_cuda.py tests/test_sync.py 2>&1 \
    | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}
timeout 200 "$PY" benchmarks/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.log"
bench=${PIPESTATUS[0]}
cp benchmarks/results/gpu.json "$OUT/" 2>/dev/null
echo "tests rc=$tests, bench_gpu rc=$bench" | tee -a "$OUT/gpu.txt"
exit $(( tests || bench ))
