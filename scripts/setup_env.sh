#!/usr/bin/env bash
# Creates (or reuses) a virtual environment for hf-mixmatch and installs this checkout into it.
# The environment is cached outside the checkout, keyed by the dependency list in pyproject.toml, so a
# second run (or a fresh clone with the same dependencies) takes seconds. Prints the venv path last.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
key=$(sed -n '/^dependencies = \[/,/^\]/p;/^dev = /p' pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
VENV="${HF_MIXMATCH_VENV:-$HOME/.cache/hf_mixmatch/venv-$key}"
if [ ! -f "$VENV/.complete" ]; then
  echo "hf-mixmatch: creating $VENV (first run: ~3 minutes, ~6 GB)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]" >&2
  touch "$VENV/.complete"
else
  # point the cached environment's editable install at this checkout
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e . >&2
fi
echo "$VENV"
