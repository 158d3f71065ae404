"""The demo generation models: build-once cache of the base GPT-2 and one LoRA adapter per dataset.

Layout of one build, `<cache>/models-<key>/`:

    base/                 Hugging Face model folder (config, model.safetensors, tokenizer files)
    adapters/<dataset>/   peft LoRA adapter folder trained on that dataset alone
    manifest.json         configs, versions, losses, timings and weight digests of the build

The key hashes the training data, the tokenizer, both training configs, the library versions and
`MODELS_CODE_VERSION`, so any change to what shapes the weights gives a fresh build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tributa.errors import TributaError
from tributa.ml import tokenizer as tok_mod
from tributa.ml.train import (
    AdapterTrainConfig,
    BaseTrainConfig,
    Progress,
    TrainStats,
    state_dict_digest,
    train_adapter,
    train_base_model,
)

# Bump when the training or saving code changes in a way the configs do not capture.
MODELS_CODE_VERSION = 2
BASE_NAME = "tributa-demo-base"
MANIFEST = "manifest.json"


class ModelFolderError(TributaError, FileNotFoundError):
    """A model or adapter folder is missing or is not a Hugging Face / peft folder."""


@dataclass(frozen=True)
class DemoModels:
    """Where one build of the demo models lives."""

    root: Path
    base_dir: Path
    adapters: dict[str, Path]
    cache_key: str
    manifest: dict[str, Any] = field(repr=False, compare=False)

    @property
    def adapter_names(self) -> tuple[str, ...]:
        return tuple(self.adapters)


def demo_models_key(
    base_config: BaseTrainConfig = BaseTrainConfig(),
    adapter_config: AdapterTrainConfig = AdapterTrainConfig(),
) -> str:
    """Cache key of the demo models built from the shipped data with these configs."""
    files = tok_mod.corpus_files()
    meta = {
        "data": tok_mod.files_digest(files),
        "tokenizer": tok_mod.tokenizer_cache_key(files),
        "base": asdict(base_config),
        "adapter": asdict(adapter_config),
        "code": MODELS_CODE_VERSION,
        "versions": library_versions(),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    # Kernels and initialisation can change between releases, so they are part of the key.
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _load_hit(root: Path, key: str) -> DemoModels | None:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    base_dir = root / "base"
    adapters = {name: root / "adapters" / name for name in manifest["adapters"]}
    complete = (base_dir / "model.safetensors").is_file() and all(
        (d / "adapter_model.safetensors").is_file() for d in adapters.values()
    )
    if not complete:
        return None
    return DemoModels(root=root, base_dir=base_dir, adapters=adapters, cache_key=key, manifest=manifest)


def file_sha256(path: Path, progress: Callable[[int, int], None] | None = None) -> bytes:
    """sha256 of one file's bytes, read in 1 MiB chunks (weights are hundreds of MB); `progress`
    hears (bytes done, file size) after each chunk."""
    h = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return h.digest()


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """An exclusive file lock, so concurrent processes build once and the others wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_demo_models(
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress = print,
    base_config: BaseTrainConfig = BaseTrainConfig(),
    adapter_config: AdapterTrainConfig = AdapterTrainConfig(),
) -> DemoModels:
    """The demo base model and per-dataset adapters, trained on first use, then a cache hit.

    `cache_dir` defaults to $TRIBUTA_CACHE_DIR, else `.cache/tributa/` under the current folder.
    """
    cache_root = tok_mod.resolve_cache_dir(cache_dir)
    key = demo_models_key(base_config, adapter_config)
    root = cache_root / f"models-{key}"
    hit = _load_hit(root, key)
    if hit is not None:
        return hit
    with build_lock(cache_root / f".models-{key}.lock"):
        hit = _load_hit(root, key)  # another process may have built it while we waited
        if hit is not None:
            return hit
        progress(f"building demo models into {root} (first use; cached afterwards)")
        build_into(root, lambda tmp: _build(tmp, key, cache_root, base_config, adapter_config, progress))
    built = _load_hit(root, key)
    if built is None:
        raise RuntimeError(f"demo model build in {root} is incomplete; delete it and retry")
    return built


def canonicalise_adapter_config(path: Path) -> None:
    """Sort peft's `target_modules`: it is a set, so its order varies with the hash seed, and the
    folder's bytes (hence its content digest) must be the same on every machine."""
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def save_adapter(model: peft.PeftModel, stats: TrainStats, folder: Path, name: str) -> dict[str, Any]:
    """Save adapter `name` under `folder/name` with a canonical config; its manifest entry."""
    # Embeddings are not LoRA targets; False also skips peft's hub look-up of the base name.
    model.save_pretrained(str(folder), selected_adapters=[name], save_embedding_layers=False)
    canonicalise_adapter_config(folder / name / "adapter_config.json")
    return {
        "digest": state_dict_digest(model, trainable_only=True),
        "final_loss": stats.final_loss,
        "seconds": round(stats.seconds, 2),
        "trainable_params": stats.trainable_params,
    }


def build_into(root: Path, build: Callable[[Path], None]) -> None:
    """Run `build` on a fresh folder beside `root`, then swap it in whole: a killed build leaves
    a temporary folder, never a half-built `root`. Call under `build_lock`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-build-", dir=root.parent))
    try:
        build(tmp)
        make_readable(tmp)
        if root.exists():  # an incomplete leftover from a killed build
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def make_readable(root: Path) -> None:
    # mkdtemp and safetensors create owner-only entries; the cache is shared read-only data.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _build(
    out: Path,
    key: str,
    cache_root: Path,
    base_config: BaseTrainConfig,
    adapter_config: AdapterTrainConfig,
    progress: Progress,
) -> None:
    started = time.perf_counter()
    tokenizer = tok_mod.load_tokenizer(cache_root)
    datasets = tok_mod.demo_dataset_dirs()
    texts = {name: tok_mod.read_dataset_text(d) for name, d in datasets.items()}

    base, base_stats = train_base_model(tokenizer, list(texts.values()), base_config, progress)
    base_dir = out / "base"
    base.save_pretrained(str(base_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(base_dir))
    base_digest = state_dict_digest(base)
    del base

    adapters: dict[str, Any] = {}
    for name, text in texts.items():
        # Each adapter starts from the saved base, so it depends only on that folder and its data.
        fresh, _ = load_causal_lm(base_dir)
        fresh.config.name_or_path = BASE_NAME
        fresh.name_or_path = BASE_NAME  # what peft writes into adapter_config.json
        model, stats = train_adapter(fresh, tokenizer, [text], name, adapter_config, progress)
        adapters[name] = save_adapter(model, stats, out / "adapters", name)
    manifest = {
        "cache_key": key,
        "base": {
            "name": BASE_NAME,
            "digest": base_digest,
            "final_loss": base_stats.final_loss,
            "seconds": round(base_stats.seconds, 2),
            "params": base_stats.trainable_params,
        },
        "adapters": adapters,
        "base_config": asdict(base_config),
        "adapter_config": asdict(adapter_config),
        "versions": library_versions(),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    progress(f"demo models built in {manifest['build_seconds']:.1f}s")


def load_causal_lm(
    model_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any local Hugging Face causal-LM folder (weights + tokenizer), in eval mode; no hub."""
    path = Path(model_dir).expanduser()
    if not (path / "config.json").is_file():
        raise ModelFolderError(
            f"{path} is not a Hugging Face model folder (no config.json); pass the folder that "
            "holds config.json, the weights and the tokenizer files"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    # Safetensors only, never remote code: loading a stranger's folder must not execute anything.
    model = AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    # transformers wraps PreTrainedModel.to so that its annotation loses nn.Module.to's arguments.
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    if isinstance(model, GPT2LMHeadModel) and tokenizer.pad_token_id is None:
        # Stock GPT-2 tokenizers have no pad token; generation only needs one for batching.
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
