#!/usr/bin/env bash
# Set up the environment (once) and run the main job or the tests. Needs only Python 3.11.
#   bash quickstart.sh sweep [OUT]   # the default sweep (preset "quick") on offline assets, then its report
#   bash quickstart.sh test          # the test suite
#   bash quickstart.sh setup         # only create .venv and install (the project too: .venv/bin/hetfedlora)
set -euo pipefail
cd "$(dirname "$0")"
export RAY_AUTH_MODE=disabled PIP_DISABLE_PIP_VERSION_CHECK=1

setup() {
  if [ ! -x .venv/bin/python ] || [ ! -f .venv/.installed ] || [ requirements.txt -nt .venv/.installed ] \
     || [ requirements-assets.txt -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    python3.11 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt
    .venv/bin/python -m pip install -q --no-deps -r requirements-assets.txt
    .venv/bin/python -m pip install -q --no-deps -e .   # the hetfedlora command (.venv/bin/hetfedlora)
    touch .venv/.installed
  fi
}

case "${1:-}" in
  setup) setup ;;
  sweep)
    setup
    out="${2:-results/quick}"
    if [ -f "$out/sweep.yaml" ]; then resume=(--resume "$out"); else resume=(--out "$out"); fi
    .venv/bin/hetfedlora sweep --preset quick "${resume[@]}"   # = python -m sweeps.run
    .venv/bin/hetfedlora report "$out"                          # = python -m analysis.report
    ;;
  test)
    setup
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m pytest -q
    ;;
  *) echo "usage: bash quickstart.sh {sweep [OUT]|test|setup}" >&2; exit 2 ;;
esac
