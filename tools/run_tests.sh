#!/usr/bin/env bash
# Installs what is missing (tools/setup_env.sh) and runs the test suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k flow`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "${FMKT_VENV:-$ROOT/.venv}/bin/python" -m pytest tests "$@"
