#!/usr/bin/env bash
# The main job on the embedded default, offline: prune the bundled digits ResNet with Mix-and-Match
# (3 signals x 13 strategies), evaluate every variant, write results/report/Pareto front to runs/default.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/setup_env.sh)
export HF_HUB_OFFLINE=1
exec "$VENV/bin/hf-mixmatch" prune default --output-dir "${1:-runs/default}" --overwrite --save pareto
