#!/usr/bin/env bash
# The GPU check in one command: bench (360M -> 135M shapes, with and without compiled layers), a real session
# on the bundled pair at GPU settings, the three probes and the evaluation; one JSON with every figure and the
# card's name. Without CUDA the same steps run at tiny scale (the test suite runs it so).
#   bash scripts/gpu_check.sh [OUT.json] [--tiny] [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
shift || true
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false "$PY" scripts/gpu_check.py --out "$out" "$@"
