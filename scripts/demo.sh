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
run_log="$PREFECT_HOME/demo-run.log"
# the report shows the run started here (its id, printed by `deployment run`), not a later or nested one
run_option() {
    local id
    id=$(grep -oE 'UUID: [0-9a-f-]{36}' "$run_log" | head -n 1 | cut -d' ' -f2 || true)
    if [ -n "$id" ]; then echo "--run $id"; fi
}
if ! prefect deployment run "$DEPLOYMENT" --watch | tee "$run_log"; then
    echo "== why the run failed"
    # shellcheck disable=SC2046
    python -m flows.report "${DEPLOYMENT%%/*}" $(run_option) || true
    exit 1
fi
run_seconds=$(( $(date +%s) - run_started ))

echo "== results"
# shellcheck disable=SC2046
python -m flows.report "${DEPLOYMENT%%/*}" $(run_option)
echo
echo "flow run: ${run_seconds} s (whole demo: $(( $(date +%s) - started )) s)"
echo "Prefect UI: ${PREFECT_API_URL%/api}"
echo "Stop the background server and worker with: make stop"
