#!/usr/bin/env bash
# One command from a fresh clone: create .venv, install edgevl with its dev/test extras, then run the main job,
# the end-to-end demo (plain vs reinforced training on the procedural world; report in demo_quick/).
set -euo pipefail
cd "$(dirname "$0")"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/edgevl --help
.venv/bin/edgevl demo --quick --out demo_quick
