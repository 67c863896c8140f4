#!/usr/bin/env bash
# Issue 24's GPU measurements in one run of under 8 minutes on one GPU (benchmarks/gpu_check.sh is the
# correctness check; this one is speed):
#
#   benchmarks/gpu_speed.sh [OUT_DIR]          (default: outputs/gpu_speed)
#
#   1. each closed-set method's paper-config step at the paper batch and twice it, bf16 with every switch,
#      eager and torch.compile, with model FLOPs and the fraction of the GPU's dense bf16 peak -> train_step.json
#   2. a steady-state Q2L R101-448 run: 2,048 COCO-size JPEGs, 3 epochs, the paper config's loader with
#      14 workers; the last epoch's images/s, data-wait and GPU-idle fractions             -> steady_state.json
#      (set its images/s beside part 1's eager bf16 step at the same batch: the goal is 90 %)
#   3. label embeddings of 1,006 labels x 85 templates, one label at a time against batched -> label_embeddings.json
#   4. the official code side by side (benchmarks/vs_official.py), when the official checkouts are in
#      $OFFICIAL_ROOT (default .official/: q2l/ salgl/ sgre/ mkt/ qks/, carried to the GPU machine beside
#      the working tree)                                                                     -> vs_official.json
#
# Like gpu_check.sh it runs the kit from this working tree on the machine's own python3 (wheels from .whl/ for
# what it lacks) and records each part's exit status and time; a part cut off by its limit keeps what it wrote.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-outputs/gpu_speed}
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
OFFICIAL_ROOT=${OFFICIAL_ROOT:-.official}
export PYTHONUNBUFFERED=1 MLC_PROGRESS=lines
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import open_clip" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mlc-site .whl/*.whl \
        && export PYTHONPATH=/tmp/mlc-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/lib${PYTHONPATH:+:$PYTHONPATH}

declare -A STATUS SECONDS_OF
part() {   # part NAME LIMIT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "== $name (at most $limit s): $*"
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/logs/$name.log"
    STATUS[$name]=${PIPESTATUS[0]}
    SECONDS_OF[$name]=$((SECONDS - t0))
    echo "== $name: exit ${STATUS[$name]} after ${SECONDS_OF[$name]} s"
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.csv" 2>&1
part train_step 170 $PY benchmarks/train_step.py --device cuda --methods q2l,salgl,sgre --batch 64 --steps 8 \
    --warmup 3 --threads 8 --modes fast_bf16,compile --json "$OUT/train_step.json"
part train_step_b128 60 $PY benchmarks/train_step.py --device cuda --methods q2l --batch 128 --steps 6 \
    --warmup 2 --threads 8 --modes fast_bf16 --json "$OUT/train_step_b128.json"
part steady_state 150 $PY benchmarks/rehearsal.py --device cuda --methods q2l:bf16 --epochs 3 --n-train 2048 \
    --n-val 64 --batch 64 --workers 14 --threads 8 --work /tmp/mlc-steady --json "$OUT/steady_state.json"
part label_embeddings 40 $PY benchmarks/label_embeddings.py --device cuda --qks-labels 1006 --threads 8
cp benchmarks/results_label_embeddings_cuda.json "$OUT/label_embeddings.json" 2>/dev/null
if [ -d "$OFFICIAL_ROOT" ]; then
    part vs_official 60 $PY benchmarks/vs_official.py --official-root "$OFFICIAL_ROOT" --method all --device cuda \
        --batch 32 --steps 10 --warmup 3 --threads 8
    cp benchmarks/results_vs_official_cuda.json "$OUT/vs_official.json" 2>/dev/null
else
    echo "== vs_official: skipped ($OFFICIAL_ROOT holds no official checkouts)"
fi

{
    echo "{"
    first=1
    for k in "${!STATUS[@]}"; do
        [ $first = 1 ] || echo ","
        first=0
        printf '"%s": {"exit": %s, "seconds": %s}' "$k" "${STATUS[$k]}" "${SECONDS_OF[$k]}"
    done
    echo "}"
} > "$OUT/status.json"
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -r "$OUT/logs"
cat "$OUT/status.json"
