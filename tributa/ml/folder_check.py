"""Refuse model folders that could run code or reach files outside themselves.

A registered model is data from a stranger. Loading it must never execute anything, so a folder
is refused, with one line naming the file, if it holds:
- pickle-based weights or objects (.bin, .pt, .pth, .ckpt, .pkl, .pickle): unpickling runs code;
  safetensors only;
- Python files, an `auto_map` entry in any JSON file, or a peft `auto_mapping` whose library is
  not transformers: remote code
  (`trust_remote_code` is never on, but a folder that asks for it is not a model we serve);
- a tokenizer class that transformers does not ship;
- a symlink that leaves the folder, or a hard link (a model could otherwise name the agent's
  keystore or log), or anything that is not a file, folder or symlink (a FIFO would hang a read);
- a JSON file too big to check, other than a tokenizer.json vocabulary.
It runs at `model register`, at agent start-up (the catalog) and again in the worker.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from tributa.errors import TributaError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_JSON_BYTES = 16 * 2**20


class UnsafeModelFolder(TributaError):
    """The folder holds something loading it could execute or escape through."""


def check_model_folder(folder: str | os.PathLike[str]) -> None:
    root = Path(folder).resolve()
    for path in sorted(_walk(Path(folder))):
        if path.is_symlink():
            target = path.resolve()
            if target != root and root not in target.parents:
                raise UnsafeModelFolder(f"{path} is a symlink out of the model folder (to {target})")
        if path.is_dir():
            continue
        try:
            info = path.stat()
        except OSError as exc:
            raise UnsafeModelFolder(f"{path} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeModelFolder(f"{path} is not a regular file (a FIFO, socket or device is never read)")
        if info.st_nlink > 1 and not path.is_symlink():
            raise UnsafeModelFolder(f"{path} is a hard link ({info.st_nlink} names): it may be a file outside the model folder")
        name = path.name.lower()
        if name.endswith(PICKLE_SUFFIXES):
            raise UnsafeModelFolder(f"{path}: pickle-based weights can run code when loaded; convert them to safetensors")
        if name.endswith(".py"):
            raise UnsafeModelFolder(f"{path}: a model folder with Python code (remote code) is not served")
        if name.endswith(".json"):
            _check_json(path)


def _walk(folder: Path):
    # os.walk without following directory symlinks: a link out is reported, never descended.
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _check_json(path: Path) -> None:
    if path.stat().st_size > _MAX_JSON_BYTES:
        if path.name == "tokenizer.json":
            return  # a vocabulary: transformers reads no config keys from it
        raise UnsafeModelFolder(f"{path} is over {_MAX_JSON_BYTES >> 20} MiB: too big for a config file to check")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsafeModelFolder(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        return
    if data.get("auto_map"):
        raise UnsafeModelFolder(f"{path}: 'auto_map' asks for custom (remote) code, which is never run")
    # peft writes auto_mapping for untyped adapters; it must name a transformers class, not a module to import.
    mapping = data.get("auto_mapping")
    if mapping and not (isinstance(mapping, dict) and str(mapping.get("parent_library", "")).startswith("transformers.")):
        raise UnsafeModelFolder(f"{path}: 'auto_mapping' names code outside transformers, which is never run")
    tokenizer_class = data.get("tokenizer_class")
    if path.name == "tokenizer_config.json" and tokenizer_class is not None:
        import transformers

        if not isinstance(tokenizer_class, str) or not hasattr(transformers, tokenizer_class):
            raise UnsafeModelFolder(f"{path}: tokenizer class {tokenizer_class!r} is not one transformers ships")
