#!/usr/bin/env bash
# One GPU check for the speed issue (#17, section 4), run once on a lent, offline GPU machine that has
# torch and torchvision but not open_clip:
#   a. install open_clip_torch and its deps from benchmarks/wheels/ (`make gpu-wheels`; carried along,
#      not in git) and obstructlib itself (editable, no deps);
#   b. CLIP training-step throughput (benchmarks/clip_throughput.py): ViT-B-32, batch 256, eager;
#   c. one colab-scale step of each protection at 224 px (`python -m benchmarks ... --scale gpu`);
#   d. the same throughput under torch.compile (last: it is the step most likely to run long).
# Every step has its own timeout, all of them together a deadline (GPU_CHECK_BUDGET_S, default 460 s:
# under 8 minutes with the summary), a step never runs past it,
# and a failed step is one JSON line {"step", "error", "rc", "seconds"} in steps.jsonl; the script goes on.
#
# Usage, from the repository root (the device tool: carry ["benchmarks/wheels"], $OUT set):
#   bash benchmarks/gpu_check.sh
# Writes under ${OUT:-./gpu_check_out}: steps.jsonl, env.jsonl, throughput.jsonl, passes.jsonl,
# nvidia-smi.txt, pip-freeze-before.txt, pip-freeze.txt and one <step>.log per step.
# A dry run of the plumbing on CPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_ARCH=tiny-vit GPU_CHECK_BATCH=8 ...
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
WHEELS=benchmarks/wheels
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
ARCH="${GPU_CHECK_ARCH:-ViT-B-32}"
BATCH="${GPU_CHECK_BATCH:-256}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-460}"
PY="${PYTHON:-$(command -v python || command -v python3 || true)}"
[[ -n $PY ]] || { echo "gpu_check: no python or python3 on PATH (set PYTHON)" >&2; exit 1; }
START=$(date +%s)

# offline and quiet; the repo on the path even where the editable install fails
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# record STEP RC MILLISECONDS [ERROR]: one JSON line in steps.jsonl
record() {
    "$PY" -c 'import json, sys
step, rc, ms, error = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
line = {"step": step, "rc": rc, "seconds": ms / 1000}
print(json.dumps({**line, "error": error} if error else line))' "$1" "$2" "$3" "${4:-}" >>"$OUT/steps.jsonl"
}

# step NAME LIMIT_S CMD...: run CMD under min(LIMIT_S, time left), log to NAME.log, record the outcome
step() {
    local name=$1 limit=$2 left rc t0 last error=""
    shift 2
    left=$((BUDGET_S - ($(date +%s) - START)))
    if ((left < 20)); then
        record "$name" 125 0 "skipped: the ${BUDGET_S} s budget is spent"
        return 0
    fi
    if ((limit > left)); then limit=$left; fi
    echo "== $name (limit ${limit} s)"
    t0=$(date +%s%N)
    rc=0
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    # the log's last non-blank line: a Python exception, pip's error, or where a hang stopped
    last=$(grep -v '^[[:space:]]*$' "$OUT/$name.log" | tail -n 1 || true)
    if ((rc == 124 || rc == 137)); then
        error="timeout after ${limit} s; last line: ${last:0:300}"
    elif ((rc != 0)); then
        error="exit $rc: ${last:0:300}"
    fi
    record "$name" "$rc" $((($(date +%s%N) - t0) / 1000000)) "$error"
    [[ -z $error ]] || echo "   failed: $error"
}

timeout 30 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed (rc $?)" >>"$OUT/nvidia-smi.txt"
timeout 60 "$PY" -m pip freeze >"$OUT/pip-freeze-before.txt" 2>&1 || true

# a. wheels: resolve against what is installed (torch and torchvision are never touched: they are not in
# the folder); where resolution fails, install every wheel's package that is missing, without deps
if [[ ! -d $WHEELS ]]; then
    record install_wheels 2 0 "$WHEELS missing: run 'make gpu-wheels' here and carry benchmarks/wheels"
else
    step install_wheels 120 "$PY" -m pip install --no-index --find-links "$WHEELS" open_clip_torch ftfy wcwidth
    if tail -n 1 "$OUT/steps.jsonl" | grep -q '"error"'; then
        mapfile -t names < <(ls "$WHEELS" | sed 's/-.*//' | sort -u)
        step install_wheels_nodeps 120 "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" "${names[@]}"
    fi
    step install_obstructlib 120 "$PY" -m pip install --no-index --no-deps --find-links "$WHEELS" -e .
fi
timeout 60 "$PY" -m pip freeze >"$OUT/pip-freeze.txt" 2>&1 || true
step env 60 "$PY" -c '
import importlib, json, os, platform, sys
import torch
versions = {}
for name in ("torchvision", "open_clip", "timm", "numpy", "scipy", "sklearn", "obstructlib"):
    try:
        versions[name] = getattr(importlib.import_module(name), "__version__", "?")
    except Exception as e:
        versions[name] = f"missing: {type(e).__name__}: {e}"
cuda = torch.cuda.is_available()
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
    "cuda_available": cuda, "device_name": torch.cuda.get_device_name() if cuda else None,
    "cpus": os.cpu_count(), **versions}))'
grep '^{' "$OUT/env.log" >>"$OUT/env.jsonl" || true

# b. eager throughput
THROUGHPUT=(benchmarks/clip_throughput.py --arch "$ARCH" --batch-size "$BATCH" --device "$DEVICE"
    --flops yes --steps 20 --warmup 5 --out "$OUT/throughput.jsonl")
step throughput_eager 150 "$PY" "${THROUGHPUT[@]}"

# c. each protection, one colab-scale step at 224 px, peak GPU memory (benchmarks/__main__.py)
if [[ -f benchmarks/__main__.py ]]; then
    step passes 300 "$PY" -m benchmarks mem mem-em em tap uc ntp ubt lto --scale gpu --device "$DEVICE" \
        --out "$OUT/passes.jsonl"
else
    record passes 2 0 "benchmarks/__main__.py missing: the passes entry point is not in this tree"
fi

# d. compiled throughput (compile time reported as compile_s, not timed)
step throughput_compile 240 "$PY" "${THROUGHPUT[@]}" --compile

# summary
echo "== summary ($(($(date +%s) - START)) s)"
for f in steps env throughput passes; do
    [[ -f $OUT/$f.jsonl ]] && { echo "-- $f.jsonl"; cat "$OUT/$f.jsonl"; }
done
exit 0
