#!/usr/bin/env bash
# Runs the server with the simulated demo fleet on the embedded default
# (SQLite in ./data). Installs ONNX Runtime from PyPI first (into .venv, see
# scripts/setup-python.sh) so predictions are on. Extra arguments go to
# `trackingbms serve` (e.g. `scripts/demo.sh --bind 0.0.0.0:8080`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
exec cargo run --release --locked --bin trackingbms -- serve --demo "$@"
