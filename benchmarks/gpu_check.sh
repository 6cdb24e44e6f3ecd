#!/usr/bin/env bash
# The GPU figures of the speed benchmarks in one prepared run (about 8 minutes on one H200):
# the batched MLP benchmark, the MNIST-1D double-descent sweep and the whole catalog's quick
# tour, all with --device cuda. CPU stays the default everywhere and CI needs no GPU.
#
# Usage, from the repository root on a machine with a CUDA GPU and a CUDA build of torch:
#     bash benchmarks/gpu_check.sh [OUTDIR]        (default: $OUT, else gpu_results)
# It runs learnscope from src/ (no install: the GPU image's torch is not the pinned CPU build).
# Python packages the image lacks (mnist1d, plotly) are installed from wheels in .whl/ when
# that folder exists; fetch them on a machine with the package index:
#     python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp -d .whl mnist1d==0.0.2.post1 plotly==7.1.0
# Each part has its own time limit, so one slow part cannot take the others' results with it.
set -uo pipefail
out="${1:-${OUT:-gpu_results}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/learnscope-site .whl/*.whl || exit 1
    export PYTHONPATH="$PWD/src:/tmp/learnscope-site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    date -u
    nvidia-smi || true
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    "$py" -c "import learnscope, mnist1d, plotly; print('learnscope imports')"
} > "$out/env.txt" 2>&1

part() {  # part NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/env.txt"
}

part batched_cuda 120 "$py" benchmarks/batched_training.py --device cuda --repeats 2
part dd_sweep_cuda 180 "$py" benchmarks/double_descent_sweep.py --device cuda --workers 1 \
    --plain-steps 300 --repeats 1
part tour_cuda 180 "$py" -m learnscope tour --quick --device cuda --jobs 8 \
    --out /tmp/learnscope-gpu-runs
cp /tmp/learnscope-gpu-runs/tour/*/tour.json "$out/tour_cuda.json" 2>/dev/null || true
