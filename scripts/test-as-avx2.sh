#!/usr/bin/env bash
# Run the test suite (or the pytest arguments given) as on a CPU without native bf16: the CPU
# flags the app reads lose every AVX-512 and AMX flag (precision "auto" = fp32) and oneDNN is
# capped at AVX2. For machines with avx512_bf16/amx_bf16, where the README's test command runs
# the bf16 path: this runs the other one.  Usage: scripts/test-as-avx2.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
fake=$(mktemp)
trap 'rm -f "$fake"' EXIT
grep -m1 -E '^(flags|Features)' /proc/cpuinfo | sed -E 's/ (avx512[a-z0-9_]*|amx_[a-z0-9_]*)//g' > "$fake"
export NETVLAD_FAKE_CPUINFO="$fake" ONEDNN_MAX_CPU_ISA=AVX2
export PYTHONPATH="$PWD/scripts/avx2sim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m pytest -q "$@"
