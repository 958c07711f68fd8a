#!/usr/bin/env bash
# Retrains every prediction model from scratch on api/models/data/ and
# writes the ONNX files, the manifest, the parity fixtures and
# api/models/MODEL_CARD.md. Installs the pinned training packages into
# ./.venv first. Afterwards: `cargo test --test predictions` checks the new
# files, and `trackingbms replay-cells api/models/data/battery-aging/cells.csv`
# gives the end-to-end figures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
.venv/bin/pip install --quiet --disable-pip-version-check -r api/models/training/requirements.txt
cd api/models/training
../../../.venv/bin/python train.py
