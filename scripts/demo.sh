#!/usr/bin/env bash
# The main job on the embedded demo: generate the demo corpus, start (or reuse) a local Prefect server
# and worker, deploy prefect.yaml, run build-alignment-data/demo and print where everything is.
# Run through `make demo`, which prepares the environment this script expects.
set -euo pipefail
cd "$(dirname "$0")/.."

DEPLOYMENT="${DEMO_DEPLOYMENT:-build-alignment-data/demo}"
started=$(date +%s)

echo "== demo corpus"
python -m data.demo --out "$LLAVA_REWARD_ARTIFACTS/demo-corpus/seed0"

echo "== prefect services"
scripts/services.sh start

echo "== deploy prefect.yaml"
prefect --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1 || { cat "$PREFECT_HOME/deploy.log"; exit 1; }
prefect deployment ls

echo "== run $DEPLOYMENT"
run_started=$(date +%s)
if ! prefect deployment run "$DEPLOYMENT" --watch; then
    echo "== why the run failed"
    python -m flows.report "${DEPLOYMENT%%/*}" || true
    exit 1
fi
run_seconds=$(( $(date +%s) - run_started ))

echo "== results"
python -m flows.report "${DEPLOYMENT%%/*}"
echo
echo "flow run: ${run_seconds} s (whole demo: $(( $(date +%s) - started )) s)"
echo "Prefect UI: ${PREFECT_API_URL%/api}"
echo "Stop the background server and worker with: make stop"
