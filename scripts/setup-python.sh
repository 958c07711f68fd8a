#!/usr/bin/env bash
# Creates ./.venv and installs, from PyPI, the pinned Python packages the
# project runs with: pymodbus (a simulated Modbus TCP battery for the tests)
# and onnxruntime, whose shared library the server loads for predictions
# (linked as .ort/libonnxruntime.so, the server's default location).
set -euo pipefail
cd "$(dirname "$0")/.."
reqs=(api/tests/modbus/requirements.txt api/models/requirements-runtime.txt)
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.requirements-installed
stale=0
[ -f "$stamp" ] || stale=1
for r in "${reqs[@]}"; do [ "$r" -nt "$stamp" ] 2>/dev/null && stale=1; done
if [ "$stale" = 1 ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check "${reqs[@]/#/-r}"
  touch "$stamp"
fi
lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.* | head -n 1)
mkdir -p .ort
ln -sf "$PWD/$lib" .ort/libonnxruntime.so
