"""Local model folders, addressed by the digests the DataRegistry stores.

A model's on-chain `weights_digest` (and each adapter digest) is the sha2-256 digest
inside the CID that `ipfs add -r` gives the folder, so anyone holding the folder can
prove it is the registered model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tributa.errors import TributaError
from tributa.ml.folder_check import check_model_folder
from tributa.store import cid as cidlib


@dataclass(frozen=True)
class LocalModel:
    path: Path
    cid: str
    digest: bytes
    kind: str  # "generate", "embed" or "adapter"


def model_kind(path: Path) -> str:
    """What a Hugging Face folder holds, from its config files."""
    if (path / "adapter_config.json").exists():
        return "adapter"
    config_file = path / "config.json"
    if not config_file.exists():
        raise TributaError(f"{path} is not a model folder (no config.json or adapter_config.json)")
    try:
        config = json.loads(config_file.read_text())
    except ValueError:
        raise TributaError(f"{config_file} is not valid JSON") from None
    architectures = " ".join(config.get("architectures") or [config.get("model_type", "")])
    if "LMHead" in architectures or "CausalLM" in architectures:
        return "generate"
    return "embed"


def describe_folder(store, path: Path) -> LocalModel:
    path = Path(path)
    if not path.is_dir():
        raise TributaError(f"model folder {path} does not exist")
    check_model_folder(path)  # no pickles, remote code or symlinks out, before anything reads it
    cid = str(store.cid_of(path))
    return LocalModel(path=path, cid=cid, digest=cidlib.cid_to_digest(cid), kind=model_kind(path))


class ModelCatalog:
    """The folders one agent (or the CLI) can serve, by digest."""

    def __init__(self, store) -> None:
        self.store = store
        self._by_digest: dict[bytes, LocalModel] = {}

    def add(self, path: Path) -> LocalModel:
        model = describe_folder(self.store, path)
        self._by_digest[model.digest] = model
        return model

    def get(self, digest: bytes) -> LocalModel | None:
        return self._by_digest.get(bytes(digest))

    def __len__(self) -> int:
        return len(self._by_digest)
