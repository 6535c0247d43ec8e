#!/usr/bin/env bash
# The prepared GPU check, for a lent GPU machine (the device tool runs it from the repository root):
#
#   bash benchmarks/gpu_run.sh                     # device tool: run(command="bash benchmarks/gpu_run.sh", timeout_s=480)
#   PYTHON=.venv/bin/python bash benchmarks/gpu_run.sh --tiny --device cpu   # the same, tiny, on a CPU
#
# It uses the machine's own python3 (its image has PyTorch, transformers, peft and accelerate; this
# project goes on PYTHONPATH, nothing is installed), records the card and library versions, then runs
# benchmarks.gpu_eval under a time budget so that the call ends well inside its limit; the report is
# rewritten after every measurement, so a run cut short still brings back what it measured. Output:
# $OUT (the device tool brings that folder back) or ./gpu-out: environment.txt, gpu_eval.json,
# gpu_eval.log, then FK steering on an SD-2.1-sized pipeline with a Phi-3.5-V-sized reward
# (benchmarks.gpu_steering: gpu_steering.json / .log). Extra arguments go to benchmarks.gpu_eval.
set -uo pipefail
out=${OUT:-gpu-out}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 ||
        echo "nvidia-smi: not available"
    "$python" -c 'import sys, torch, transformers, peft
print("python", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
      "peft", peft.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$out/environment.txt"
timeout "${GPU_EVAL_TIMEOUT:-420}" "$python" -m benchmarks.gpu_eval --budget-seconds "${GPU_EVAL_BUDGET:-300}" \
    --out "$out/gpu_eval.json" "$@" 2>&1 | tee "$out/gpu_eval.log"
status=$?
# FK steering needs diffusers, which the GPU image lacks: carry it as a folder made here with
#   .venv/bin/pip install --no-deps --target .gpu-deps diffusers==0.42.1   (run(carry=[".gpu-deps"]))
[[ -d .gpu-deps ]] && export PYTHONPATH="$PWD/.gpu-deps:$PYTHONPATH"
if ! "$python" -c 'import diffusers' 2>/dev/null; then
    echo "benchmarks.gpu_steering skipped: diffusers is not importable (see the comment above)" |
        tee "$out/gpu_steering.log"
    exit "$status"
fi
steer_args=()
[[ " $* " == *" --tiny "* ]] && steer_args+=(--tiny --steps 2 --repeats 1 --resample-frequency 1)
[[ " $* " == *" --device cpu "* ]] && steer_args+=(--device cpu)
timeout "${GPU_STEERING_TIMEOUT:-150}" "$python" -m benchmarks.gpu_steering "${steer_args[@]}" \
    --out "$out/gpu_steering.json" 2>&1 | tee "$out/gpu_steering.log"
steer_status=$?
exit $((status != 0 ? status : steer_status))
