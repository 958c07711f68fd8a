#!/usr/bin/env bash
# Creates ./.venv and installs the pinned Python packages the tests use
# (pymodbus, for a simulated Modbus TCP battery) from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
req=api/tests/modbus/requirements.txt
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || [ "$req" -nt "$stamp" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  touch "$stamp"
fi
