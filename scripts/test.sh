#!/usr/bin/env bash
# Set up (cached) and run the whole test suite offline, including the 2-process torchrun test.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash scripts/setup_env.sh)
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_XET=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" -m pytest -q "$@"
