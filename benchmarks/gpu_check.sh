#!/usr/bin/env bash
# The GPU check: everything the kit can only show on a GPU, in one run of under 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh [OUT_DIR]          (default: outputs/gpu_check)
#
#   1. the machine: GPU, driver, torch build, bf16 support                       -> env.json
#   2. the CUDA test subset (tests/gpu: device choice, bf16 and fp16 training with
#      every speed switch, CUDA = CPU scores, torchrun with NCCL)
#   3. each method's paper-config training step (random init, synthetic batches):
#      fp32 baseline, fp32 with the speed switches, bf16, fp16: s/step, images/s,
#      peak memory                                                                 -> train_step.json
#   4. the rehearsal: COCO-layout JPEGs through the converter and mlc.train for
#      every method at its paper config                                            -> rehearsal.json
#   5. the oracle tests on CUDA in fp32, speed switches off and on
#   6. a summary of all of it, and the tables for docs/performance.md              -> gpu_check.json, gpu_check.md
#   every part's output                                                            -> logs.tgz
#
# Made for a GPU machine without network: it runs the kit from this working tree (PYTHONPATH=lib) on the
# machine's own python3, never installs from an index, and installs the packages that machine lacks
# (open_clip_torch, ftfy, wcwidth, submitit) from wheels in .whl/ when they are there (docs/performance.md
# says how to download them).  Each part runs even when an earlier one failed; its exit status is recorded.
#
# MLC_GPU_CHECK_DEVICE=cpu runs parts 3 and 6 at toy size on the CPU (how the test suite checks the
# script on machines without a GPU).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
DEVICE=${MLC_GPU_CHECK_DEVICE:-cuda}
export PYTHONUNBUFFERED=1 MLC_PROGRESS=lines

if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c "import open_clip" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mlc-site .whl/*.whl \
        && export PYTHONPATH=/tmp/mlc-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/lib${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${MLC_SHARED:-}" ] && [ -f shared/oracles/regen.py ]; then export MLC_SHARED=$PWD/shared; fi

mkdir -p "$OUT/logs"
declare -A STATUS SECONDS_OF
part() {   # part NAME LIMIT_S COMMAND...: run (at most LIMIT_S seconds), time and record one part; its output
           # also goes to logs/NAME.log.  The limits keep the whole check under 8 minutes on one GPU; a part cut
           # off keeps what it wrote (the JSON files are rewritten after every measurement)
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "== $name (at most $limit s): $*"
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/logs/$name.log"
    STATUS[$name]=${PIPESTATUS[0]}
    SECONDS_OF[$name]=$((SECONDS - t0))
    echo "== $name: exit ${STATUS[$name]} after ${SECONDS_OF[$name]} s"
}

part env 60 $PY - "$OUT/env.json" <<'EOF'
import json, platform, sys, importlib
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "gpus": []}
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    info["gpus"].append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
if torch.cuda.is_available():
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
    info["cudnn"] = torch.backends.cudnn.version()
    info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
for name in ("timm", "open_clip", "transformers", "torchvision", "numpy", "pandas", "submitit"):
    try:
        info[name] = importlib.import_module(name).__version__
    except Exception as e:
        info[name] = f"missing ({type(e).__name__})"
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info, indent=1))
EOF

if [ "$DEVICE" = cuda ]; then
    part gpu_tests 120 env MLC_GPU_TESTS=1 $PY -m pytest -q -p no:cacheprovider -o addopts="" tests/gpu
    part train_step 150 $PY benchmarks/train_step.py --device cuda --batch 32 --steps 8 --warmup 3 --threads 8 \
        --modes baseline,fast_fp32,fast,fast_fp16 --json "$OUT/train_step.json"
    part rehearsal 260 $PY benchmarks/rehearsal.py --device cuda --methods q2l,q2l:paper,salgl,sgre,mkt,qks \
        --n-train 128 --n-val 32 --batch 32 --workers 8 \
        --threads 8 --work /tmp/mlc-rehearsal --json "$OUT/rehearsal.json"
    part oracle_cuda 70 env MLC_TEST_DEVICE=cuda $PY -m pytest -q -p no:cacheprovider -o addopts="" \
        tests/test_q2l.py tests/test_salgl_sgre.py tests/test_open_vocab.py -k "official and not compile"
else
    part train_step 300 $PY benchmarks/train_step.py --device cpu --methods qks --batch 1 --steps 1 --warmup 0 \
        --modes baseline,fast_fp32 --json "$OUT/train_step.json"
fi

STATUS_JSON="{"
for k in "${!STATUS[@]}"; do STATUS_JSON+="\"$k\": {\"exit\": ${STATUS[$k]}, \"seconds\": ${SECONDS_OF[$k]}},"; done
STATUS_JSON="${STATUS_JSON%,}}"
$PY benchmarks/gpu_report.py "$OUT" "$STATUS_JSON"
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -r "$OUT/logs"     # one file: the device tool returns at most 8
