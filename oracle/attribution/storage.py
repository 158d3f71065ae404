"""Index folders written whole or not at all: arrays and a manifest into a sibling temp folder,
then moved into place, so a crash or a stop mid-build never leaves half an index."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"


def write_folder(
    out: Path, arrays: Mapping[str, np.ndarray], manifest: Callable[[dict[str, int]], dict[str, Any]]
) -> None:
    """Write `<name>.npy` for each array and manifest.json (made from the file sizes) as `out`,
    replacing an earlier folder there."""
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    try:
        sizes = {}
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            sizes[name] = (tmp / f"{name}.npy").stat().st_size
        (tmp / MANIFEST).write_text(json.dumps(manifest(sizes), indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_out_dir(out: Path) -> None:
    # Refuse to wipe a folder that holds anything other than an earlier index.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise FileExistsError(
            f"{out} exists and is not an attribution index; pass an empty or new directory as out_dir"
        )


def read_manifest(path: Path, kind: str, how_to_build: str) -> dict[str, Any]:
    """The manifest of the folder at `path` as a dict; `kind` names what it is in errors."""
    file = path / MANIFEST
    if not file.is_file():
        raise FileNotFoundError(f"no {kind} at {path} (missing {MANIFEST}): build one with {how_to_build}")
    try:
        raw = json.loads(file.read_text())
    except ValueError as exc:
        raise ValueError(f"{file} is not a valid {kind} manifest ({exc}); rebuild it") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{file} is not a valid {kind} manifest; rebuild it")
    return raw


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Memory-map `<name>.npy` for each name."""
    arrays = {}
    for name in names:
        file = path / f"{name}.npy"
        if not file.is_file():
            raise FileNotFoundError(f"index at {path} is missing {file.name}: rebuild it")
        arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
    return arrays
