"""Refuse model folders that could run code or reach files outside themselves.

A registered model is data from a stranger. Loading it must never execute anything, so a folder
is refused, with one line naming the file, if it holds:
- pickle-based weights or objects (.bin, .pt, .pth, .ckpt, .pkl, .pickle), or an index of shards
  that are not safetensors (a `pytorch_model.bin.index.json` loads its shards with torch.load
  whatever they are called): unpickling runs code; safetensors only;
- Python in any form (.py, .pyc, .pyo, .so, .pth, a `__pycache__` folder), or any file of a kind a
  Hugging Face, sentence-transformers or peft folder does not hold (ALLOWED_SUFFIXES/NAMES);
- an `auto_map` entry in any JSON file, or a peft `auto_mapping` whose library is not
  transformers: remote code (`trust_remote_code` is never on, but a folder that asks for it is
  not a model we serve);
- a `tokenizer_class`, in any JSON file, that is not a tokenizer transformers ships (AutoTokenizer
  would instantiate any transformers class named there, a model loader included);
- a config value that names a file or folder outside the folder: any string under a file key
  (`vocab_file`, `merges_file`, `tokenizer_file`, ...: transformers opens it in place of the
  folder's own file, relative to the process's working directory), and under a path key
  (`*_path`, `*_dir`, `path`, ...) anything absolute, with '..', or resolving outside;
- a symlink that leaves the folder, or a hard link (a model could otherwise name the agent's
  keystore or log), or anything that is not a file, folder or symlink (a FIFO would hang a read);
- a JSON file too big to check, other than a tokenizer.json vocabulary.
It runs at `model register`, at agent start-up (the catalog) and again in the worker.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from tributa.errors import TributaError
from tributa.json_input import depth_ok

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so")  # .pth (a site hook too) is a pickle suffix
# Everything the folders this project serves hold (demo and SmolLM2 bases, peft adapters, the
# bundled MiniLM): configs, weights, tokenizer files, docs. None of it is code.
ALLOWED_SUFFIXES = frozenset({".json", ".safetensors", ".txt", ".model", ".spm", ".md", ".jinja"})
ALLOWED_NAMES = frozenset({".gitattributes", ".gitignore", "readme", "license", "licence", "notice", "copying"})
_MAX_JSON_BYTES = 16 * 2**20
_MAX_JSON_DEPTH = 64  # a tokenizer.json nests 5 deep

# Keys whose string value transformers passes straight to open(): VOCAB_FILES_NAMES entries
# (vocab_file, merges_file, tokenizer_file, spm_file, sentencepiece_model_ckpt, source_spm, ...).
_FILE_KEY = re.compile(r"(?:^|_)(?:files?|filenames?|spm|ckpt)$|^vocab$", re.IGNORECASE)
# Keys that name a folder, a file or a hub id (modules.json `path`, `base_model_name_or_path`).
_PATH_KEY = re.compile(r"(?:^|_)(?:paths?|dirs?|directory|directories|folders?)$", re.IGNORECASE)


class UnsafeModelFolder(TributaError):
    """The folder holds something loading it could execute or escape through."""


def check_model_folder(folder: str | os.PathLike[str]) -> None:
    root = Path(folder).resolve()
    for path in sorted(_walk(Path(folder))):
        try:
            _check_entry(root, path)
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop, from resolve()
            raise UnsafeModelFolder(f"{path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None


def _check_entry(root: Path, path: Path) -> None:
    if path.is_symlink():
        target = path.resolve()
        if not _inside(root, target):
            raise UnsafeModelFolder(f"{path} is a symlink out of the model folder (to {target})")
    if path.is_dir():
        if path.name == "__pycache__":
            raise UnsafeModelFolder(f"{path}: compiled Python (a __pycache__ folder) is not served")
        return
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeModelFolder(f"{path} is not a regular file (a FIFO, socket or device is never read)")
    if info.st_nlink > 1 and not path.is_symlink():
        raise UnsafeModelFolder(
            f"{path} is a hard link ({info.st_nlink} names): it may be a file outside the model folder"
        )
    name = path.name.lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise UnsafeModelFolder(f"{path}: pickle-based weights can run code when loaded; convert them to safetensors")
    if name.endswith(CODE_SUFFIXES):
        raise UnsafeModelFolder(f"{path}: a model folder with Python code (source, compiled or native) is not served")
    if path.suffix.lower() not in ALLOWED_SUFFIXES and name not in ALLOWED_NAMES:
        raise UnsafeModelFolder(
            f"{path}: a model folder holds only {', '.join(sorted(ALLOWED_SUFFIXES))} files (and README, "
            "LICENSE, .gitattributes); remove this one"
        )
    if name.endswith(".json"):
        _check_json(root, path)


def _walk(folder: Path):
    # os.walk without following directory symlinks: a link out is reported, never descended.
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            yield Path(dirpath) / name


def _inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def _check_json(root: Path, path: Path) -> None:
    if path.stat().st_size > _MAX_JSON_BYTES:
        if path.name == "tokenizer.json":
            return  # a vocabulary: transformers reads no config keys from it
        raise UnsafeModelFolder(f"{path} is over {_MAX_JSON_BYTES >> 20} MiB: too big for a config file to check")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeModelFolder(f"{path} is not valid JSON: {exc}") from None
    # json's C parser recurses per level and trusts the recursion limit, which libraries raise
    # (py_ecc sets 100000): far past the C stack, so deep nesting would crash this process.
    if not depth_ok(text.encode(), _MAX_JSON_DEPTH):
        raise UnsafeModelFolder(
            f"{path} nests deeper than {_MAX_JSON_DEPTH} levels (or is unbalanced): not a config file"
        )
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UnsafeModelFolder(f"{path} is not valid JSON: {exc}") from None
    name = path.name.lower()
    if name.endswith(".index.json") and not name.endswith(".safetensors.index.json"):
        raise UnsafeModelFolder(
            f"{path}: an index of non-safetensors shards (torch.load runs them, whatever their names)"
        )
    for key, value in _items(data):
        _check_item(root, path, key, value)
    if not isinstance(data, dict):
        return
    # peft writes auto_mapping for untyped adapters; it must name a transformers class, not a module to import.
    mapping = data.get("auto_mapping")
    if mapping and not (
        isinstance(mapping, dict) and str(mapping.get("parent_library", "")).startswith("transformers.")
    ):
        raise UnsafeModelFolder(f"{path}: 'auto_mapping' names code outside transformers, which is never run")
    if "tokenizer_class" in data and not isinstance(data["tokenizer_class"], (str, type(None))):
        raise UnsafeModelFolder(f"{path}: tokenizer class {data['tokenizer_class']!r} is not a class name")


def _items(data):
    """(key, value) of every dict entry at any depth, dicts inside lists included, iteratively."""
    stack = [data]
    while stack:
        node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in children:
            if isinstance(key, str):
                yield key, value
            if isinstance(value, (dict, list)):
                stack.append(value)


def _check_item(root: Path, path: Path, key: str, value) -> None:
    if key == "auto_map" and value and isinstance(value, (dict, list, str)):
        raise UnsafeModelFolder(f"{path}: 'auto_map' asks for custom (remote) code, which is never run")
    if key == "tokenizer_class" and isinstance(value, str) and not _is_tokenizer(value):
        raise UnsafeModelFolder(f"{path}: tokenizer class {value!r} is not a tokenizer transformers ships")
    if key == "weight_map" and isinstance(value, dict):
        for shard in value.values():
            if not (
                isinstance(shard, str) and shard.lower().endswith(".safetensors") and _names_inside(root, path, shard)
            ):
                raise UnsafeModelFolder(f"{path}: shard {str(shard)[:120]!r} is not a safetensors file in the folder")
    strings = [value] if isinstance(value, str) else []
    if isinstance(value, list):
        strings = [item for item in value if isinstance(item, str)]
    if _FILE_KEY.search(key):
        for text in strings:
            if text:
                raise UnsafeModelFolder(
                    f"{path}: '{key}' names a file ({text[:120]!r}): transformers would open that path, not the "
                    "folder's own file (a relative one from the working directory); remove the key"
                )
    elif _PATH_KEY.search(key):
        for text in strings:
            if not _names_inside(root, path, text):
                raise UnsafeModelFolder(
                    f"{path}: '{key}' names something outside the model folder ({text[:120]!r}); "
                    "use a name or a path inside the folder"
                )


def _names_inside(root: Path, path: Path, text: str) -> bool:
    """`text` read as a path stays in the folder, from the JSON file's folder and from the root."""
    if "\0" in text or "://" in text or text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", text):
        return False
    if ".." in re.split(r"[/\\]", text):
        return False
    return all(_inside(root, Path(os.path.realpath(base / text))) for base in (root, path.parent.resolve()))


def _is_tokenizer(name: str) -> bool:
    """Whether AutoTokenizer, given this class name, can only build a tokenizer. It tries NAME
    and NAMEFast, and falls back to any attribute of transformers (a model loader included);
    every tokenizer it ships is such an attribute, so looking there (cheaply) is enough."""
    import transformers
    from transformers.utils.import_utils import DummyObject

    found = []
    for candidate in (name, f"{name}Fast"):
        try:
            found.append(getattr(transformers, candidate))
        except (AttributeError, ImportError):
            continue
        except Exception:  # noqa: BLE001 - a name that breaks the lookup is no tokenizer
            return False
    # A placeholder (its backend, e.g. sentencepiece, is missing) only raises when used.
    real = [cls for cls in found if not isinstance(cls, DummyObject)]
    return bool(found) and all(
        isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase) for cls in real
    )
