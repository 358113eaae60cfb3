#!/usr/bin/env bash
# Install Infinity (https://github.com/michaelfeil/infinity), the embeddings server bench/embeddings.py
# compares with, into a venv of its own: .bench/infinity-venv (not .venv: its pins are not ours).
#
#   bash bench/setup_infinity.sh
#
# torch goes in first, pinned to the CPU build the project uses; installed after infinity-emb, pip
# would pick the newest CUDA build (several GB). Idempotent: an existing venv with Infinity is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV=".bench/infinity-venv"
TORCH_VERSION="2.13.0"
INFINITY_VERSION="0.0.78"

if [ -x "$VENV/bin/infinity_emb" ] && "$VENV/bin/python" -c "import infinity_emb" 2>/dev/null; then
  echo "Infinity is already installed in $VENV"
  exit 0
fi
mkdir -p .bench
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip wheel
"${PIP[@]}" "torch==$TORCH_VERSION" ${SYN4PSE_TORCH_INDEX:+--index-url "$SYN4PSE_TORCH_INDEX"}
# The versions Infinity resolved to when this script was written, pinned so later releases cannot break it.
"${PIP[@]}" "infinity-emb[server,torch]==$INFINITY_VERSION" "sentence-transformers==3.4.1" "transformers==4.57.6" \
  "tokenizers==0.22.2" "numpy==1.26.4"
"$VENV/bin/python" -c "import infinity_emb, torch; print('infinity-emb', infinity_emb.__version__, 'torch', torch.__version__)"
