"""The project's byte-level BPE tokenizer, trained deterministically on the shipped demo corpora.

The tokenizer is built once and cached on disk under a key derived from the training text and
the training configuration, so editing a corpus (or this file's config) rebuilds it, and every
machine with the same data gets the same vocabulary and merges.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

if TYPE_CHECKING:  # transformers is imported lazily: training needs only `tokenizers`
    from transformers import PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASETS_DIR = REPO_ROOT / "data" / "datasets"
CACHE_ENV_VAR = "TRIBUTA_CACHE_DIR"

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, PAD_TOKEN)


@dataclass(frozen=True)
class TokenizerConfig:
    """Everything that shapes the trained vocabulary; part of the cache key."""

    vocab_size: int = 2048
    min_frequency: int = 2
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS
    # Bump when the training code changes in a way the fields above do not capture.
    code_version: int = 1


DEFAULT_TOKENIZER_CONFIG = TokenizerConfig()


def default_cache_dir() -> Path:
    """The cache root: $TRIBUTA_CACHE_DIR if set, else `.cache/tributa/` under the current folder
    (the Makefile sets it to the checkout's, so `make demo` and `make test` share one)."""
    override = os.environ.get(CACHE_ENV_VAR)
    return Path(override).expanduser().resolve() if override else Path.cwd() / ".cache" / "tributa"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """An explicit cache dir wins over the environment and the default."""
    return Path(cache_dir).expanduser().resolve() if cache_dir is not None else default_cache_dir()


def demo_dataset_dirs(datasets_dir: Path = DATASETS_DIR) -> dict[str, Path]:
    """The shipped demo datasets by name: each sub-folder of data/datasets/ holding .txt files."""
    if not datasets_dir.is_dir():
        raise FileNotFoundError(f"demo datasets folder {datasets_dir} is missing; restore data/datasets/ from git")
    found = {d.name: d for d in sorted(datasets_dir.iterdir()) if d.is_dir() and any(d.glob("*.txt"))}
    if not found:
        raise FileNotFoundError(f"no dataset folders with .txt files under {datasets_dir}")
    return found


def dataset_text_files(dataset_dir: Path) -> list[Path]:
    """A dataset's text files in a fixed (sorted) order, so training sees the same stream."""
    files = sorted(dataset_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"dataset folder {dataset_dir} has no .txt files")
    return files


def read_dataset_text(dataset_dir: Path) -> str:
    """A dataset's text: its .txt files in sorted order, joined by blank lines."""
    return "\n\n".join(p.read_text(encoding="utf-8") for p in dataset_text_files(dataset_dir))


def corpus_files(datasets_dir: Path = DATASETS_DIR) -> list[Path]:
    """Every training file of every demo dataset, in a fixed order."""
    return [f for d in demo_dataset_dirs(datasets_dir).values() for f in dataset_text_files(d)]


def files_digest(files: list[Path], root: Path = REPO_ROOT) -> str:
    """sha256 over (relative path, content) of each file: the data half of a cache key."""
    h = hashlib.sha256()
    root = root.resolve()
    for f in files:
        path = f.resolve()
        # Relative names keep the key the same across checkouts in different folders.
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def tokenizer_cache_key(files: list[Path], config: TokenizerConfig = DEFAULT_TOKENIZER_CONFIG) -> str:
    """Hash of the training data, the config and the tokenizers version (its trainer may change)."""
    meta = json.dumps({"config": asdict(config), "tokenizers": tokenizers.__version__}, sort_keys=True)
    return hashlib.sha256((files_digest(files) + meta).encode()).hexdigest()[:16]


def train_tokenizer(files: list[Path], config: TokenizerConfig = DEFAULT_TOKENIZER_CONFIG) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE on `files`; same files + config -> same vocab, merges."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(config.special_tokens),
        # All 256 byte symbols up front, so any UTF-8 input encodes without an unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Train from an in-memory iterator over the files in their given order (not a glob).
    tok.train_from_iterator(
        (line for f in files for line in f.read_text(encoding="utf-8").splitlines(keepends=True)),
        trainer=trainer,
    )
    return tok


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers view of a trained tokenizer, with the project's special tokens set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=1024,
    )


def _publish_dir(tmp: Path, final: Path) -> None:
    """Move a finished build into place atomically; a concurrent builder that won keeps its copy."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(
    cache_dir: str | os.PathLike[str] | None = None,
    config: TokenizerConfig = DEFAULT_TOKENIZER_CONFIG,
) -> PreTrainedTokenizerFast:
    """The demo tokenizer, trained on first use and then loaded from `<cache>/tokenizer-<key>/`."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(ensure_tokenizer_dir(cache_dir, config)))


def ensure_tokenizer_dir(
    cache_dir: str | os.PathLike[str] | None = None,
    config: TokenizerConfig = DEFAULT_TOKENIZER_CONFIG,
) -> Path:
    """Path of the cached tokenizer folder (Hugging Face format), building it if missing."""
    root = resolve_cache_dir(cache_dir)
    files = corpus_files()
    final = root / f"tokenizer-{tokenizer_cache_key(files, config)}"
    if (final / "tokenizer.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-build-", dir=root))
    try:
        wrap_tokenizer(train_tokenizer(files, config)).save_pretrained(str(tmp))
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the cache is shared read-only data
        _publish_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
