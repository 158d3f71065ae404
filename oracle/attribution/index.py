"""One dataset's attribution index: token array + suffix array + chunk embeddings + manifest.

Layout of an index directory (arrays memory-mapped on load):
    manifest.json        dataset id, content digest, sizes, dtypes, tokenizer/embedder ids, params
    tokens.npy           the dataset's tokens, uint16 (or uint32 for vocabularies over 65536)
    suffix_array.npy     positions sorted by suffix, the smallest unsigned dtype that holds them
    chunk_starts.npy     token offset of each semantic chunk (uint32)
    chunk_embeddings.npy one unit-length float16 row per chunk ((0, 0) for span-only indexes)
    chunk_screen_codes.npy, chunk_screen_bounds.npy  their int8 screen (screen.py), format 2 on

float16 rows, not float32: the float32 values are exactly the float16 ones widened, at twice
the bytes, and a query widens only the few rows the screen leaves (the full pass reads the
int8 codes). A format-1 index (no screen) gets one written beside it when first loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .params import INDEX_FORMAT_VERSION, IndexParams
from .progress import LogProgress, ProgressFn
from .screen import ChunkScreen
from .semantic import embed_texts, window_starts, window_texts
from .storage import MANIFEST, load_arrays, read_manifest, write_folder
from .suffix_array import build_suffix_array, token_dtype
from .tokenizer import TokenizerLike, as_tokenizer, check_embedder, tokenizer_id

log = logging.getLogger("tributa.oracle.attribution")

_ARRAYS_V1 = ("tokens", "suffix_array", "chunk_starts", "chunk_embeddings")
_SCREEN = ("chunk_screen_codes", "chunk_screen_bounds")
_ARRAYS = _ARRAYS_V1 + _SCREEN
_OLD_FILES = ("chunk_embeddings.f32.npy",)  # format 1's float32 cache: the screen replaces it


@dataclass(frozen=True)
class IndexManifest:
    format_version: int
    dataset_id: str
    content_kind: str  # "text" (sha256 of its UTF-8 bytes) or "token_ids" (of uint32 LE ids)
    content_sha256: str
    token_count: int
    token_dtype: str
    suffix_array_dtype: str
    tokenizer_id: str
    embedder_id: str | None
    embedding_dim: int
    chunk_count: int
    params: dict[str, Any]
    bytes: dict[str, int]  # file sizes, to report bytes per token

    @property
    def bytes_per_token(self) -> float:
        """Token array + suffix array per token: the figure comparable to Infini-gram's ~7."""
        return (self.bytes["tokens"] + self.bytes["suffix_array"]) / self.token_count


@dataclass(frozen=True)
class AttributionIndex:
    manifest: IndexManifest
    tokens: np.ndarray
    suffix_array: np.ndarray
    chunk_starts: np.ndarray
    chunk_embeddings: np.ndarray  # (chunk_count, dim) float16; (0, 0) for span-only indexes
    chunk_screen_codes: np.ndarray  # (chunk_count, dim) int8: see screen.py
    chunk_screen_bounds: np.ndarray  # (chunk_count, 2) float32
    path: Path | None = None

    @property
    def screen(self) -> ChunkScreen:
        return ChunkScreen(self.chunk_screen_codes, self.chunk_screen_bounds)

    @property
    def dataset_id(self) -> str:
        return self.manifest.dataset_id

    @property
    def token_count(self) -> int:
        return self.manifest.token_count

    @classmethod
    def build(
        cls,
        dataset_id: str,
        text_or_path: str | os.PathLike[str] | Sequence[int] | np.ndarray,
        tokenizer: Any,
        embedder: Any | None,
        out_dir: str | os.PathLike[str],
        progress: ProgressFn | None = None,
        params: IndexParams = IndexParams(),
    ) -> AttributionIndex:
        """Index a dataset into `out_dir` and return it loaded (memory-mapped).

        `text_or_path`: a str is the dataset's text; a Path is a UTF-8 file to read; a sequence or
        array of ints is the dataset already tokenized. `embedder=None` builds a span-only index.
        An existing index in `out_dir` is replaced once the new one is complete.
        """
        if not isinstance(dataset_id, str) or not dataset_id.strip():
            raise ValueError(f"dataset_id must be a non-empty string, got {dataset_id!r}")
        tok = as_tokenizer(tokenizer)
        if embedder is not None:
            check_embedder(embedder)
        report = progress or LogProgress(dataset_id)
        tokens, kind, digest = _tokens_of(dataset_id, text_or_path, tok, params, report)

        report("suffix_array", 0, len(tokens))
        sa = build_suffix_array(tokens)
        report("suffix_array", len(tokens), len(tokens))

        starts = window_starts(len(tokens), params.chunk_tokens, params.chunk_stride)
        if embedder is None:
            embeddings = np.zeros((0, 0), dtype=np.float16)
            starts = starts[:0]
        else:
            texts = window_texts(tokens, starts, params.chunk_tokens, tok.decode)
            report("embed", 0, len(texts))
            vectors = embed_texts(
                texts, embedder, params.embed_batch_size, lambda done: report("embed", done, len(texts))
            )
            embeddings = vectors.astype(np.float16)

        screen = ChunkScreen.of(embeddings)
        arrays = {
            "tokens": tokens,
            "suffix_array": sa,
            "chunk_starts": starts.astype(np.uint32),
            "chunk_embeddings": embeddings,
            "chunk_screen_codes": screen.codes,
            "chunk_screen_bounds": screen.bounds,
        }

        def manifest(sizes: dict[str, int]) -> dict[str, Any]:
            return asdict(
                IndexManifest(
                    format_version=INDEX_FORMAT_VERSION,
                    dataset_id=dataset_id,
                    content_kind=kind,
                    content_sha256=digest,
                    token_count=len(tokens),
                    token_dtype=str(tokens.dtype),
                    suffix_array_dtype=str(sa.dtype),
                    tokenizer_id=tokenizer_id(tok),
                    embedder_id=None if embedder is None else embedder.model_id,
                    embedding_dim=0 if embedder is None else int(embeddings.shape[1]),
                    chunk_count=len(starts),
                    params=asdict(params),
                    bytes=sizes,
                )
            )

        out = Path(out_dir)
        write_folder(out, arrays, manifest)
        return cls.load(out)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AttributionIndex:
        """Open an index built by build(); arrays are memory-mapped, not read into memory."""
        path = Path(directory)
        raw = read_manifest(
            path, "attribution index", "AttributionIndex.build(dataset_id, text, tokenizer, embedder, out_dir)"
        )
        try:
            manifest = IndexManifest(**raw)
        except TypeError as exc:
            raise ValueError(f"{path / MANIFEST} is not a valid index manifest ({exc}); rebuild the index") from exc
        if manifest.format_version not in (1, INDEX_FORMAT_VERSION):
            raise ValueError(
                f"index at {path} has format {manifest.format_version}, this engine reads "
                f"{INDEX_FORMAT_VERSION}: rebuild it with AttributionIndex.build"
            )
        arrays = load_arrays(path, _ARRAYS_V1)
        if manifest.format_version == 1:
            manifest, screen = _add_screen(path, manifest, arrays["chunk_embeddings"])
            arrays.update(chunk_screen_codes=screen.codes, chunk_screen_bounds=screen.bounds)
        else:
            arrays.update(load_arrays(path, _SCREEN))
        index = cls(manifest=manifest, path=path, **arrays)
        index.validate()
        return index

    def validate(self) -> None:
        """Cheap consistency checks between the manifest and the arrays."""
        m = self.manifest
        problems = []
        if len(self.tokens) != m.token_count or len(self.suffix_array) != m.token_count:
            problems.append(f"token count {m.token_count} vs arrays {len(self.tokens)}/{len(self.suffix_array)}")
        if len(self.chunk_starts) != m.chunk_count:
            problems.append(f"chunk count {m.chunk_count} vs {len(self.chunk_starts)} chunk starts")
        if m.embedder_id is not None and self.chunk_embeddings.shape != (m.chunk_count, m.embedding_dim):
            problems.append(f"chunk embeddings shape {self.chunk_embeddings.shape}")
        if not self.screen.matches(self.chunk_embeddings):
            problems.append(f"chunk screen shape {self.chunk_screen_codes.shape} for {self.chunk_embeddings.shape}")
        if problems:
            where = self.path or "memory"
            raise ValueError(
                f"attribution index {m.dataset_id!r} at {where} is inconsistent: "
                + "; ".join(problems)
                + ". Rebuild it."
            )


def _add_screen(path: Path, manifest: IndexManifest, embeddings: np.ndarray) -> tuple[IndexManifest, ChunkScreen]:
    """Upgrade a format-1 index: its chunk screen, computed from its embeddings and written into
    its folder (format 2 from then on), or kept in memory when the folder is read-only."""
    screen = ChunkScreen.of(embeddings)
    temps = [path / f".{name}.{os.getpid()}.tmp.npy" for name in (*_SCREEN, MANIFEST)]
    try:
        sizes = dict(manifest.bytes)
        for name, array, tmp in zip(_SCREEN, (screen.codes, screen.bounds), temps, strict=False):
            np.save(tmp, array, allow_pickle=False)
            sizes[name] = tmp.stat().st_size
            os.replace(tmp, path / f"{name}.npy")
        upgraded = IndexManifest(**{**asdict(manifest), "format_version": INDEX_FORMAT_VERSION, "bytes": sizes})
        temps[-1].write_text(json.dumps(asdict(upgraded), indent=2, sort_keys=True) + "\n")
        os.replace(temps[-1], path / MANIFEST)  # the screen files are in place before the manifest names them
        for old in _OLD_FILES:
            (path / old).unlink(missing_ok=True)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        log.warning(
            "attribution index %s at %s has format 1: its chunk screen is computed in memory on each "
            "load (%s); rebuild it, or make the folder writable, to upgrade it to format %d",
            manifest.dataset_id,
            path,
            exc,
            INDEX_FORMAT_VERSION,
        )
        return manifest, screen
    log.info(
        "attribution index %s at %s upgraded from format 1 to %d: chunk screen written (%d chunks)",
        manifest.dataset_id,
        path,
        INDEX_FORMAT_VERSION,
        manifest.chunk_count,
    )
    return upgraded, screen


def _tokens_of(
    dataset_id: str,
    source: Any,
    tok: TokenizerLike,
    params: IndexParams,
    report: ProgressFn,
) -> tuple[np.ndarray, str, str]:
    """(token array, content kind, content sha256) of a text, a file or a token-id sequence."""
    if isinstance(source, os.PathLike):
        file = Path(source)
        if not file.is_file():
            raise FileNotFoundError(f"dataset {dataset_id!r}: no file at {file}")
        try:
            source = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"dataset {dataset_id!r}: {file} is not UTF-8 text ({exc})") from exc
    if isinstance(source, str):
        if not source.strip():
            raise ValueError(f"dataset {dataset_id!r} is empty (no text to index); register a dataset with content")
        digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        ids: list[int] = []
        pieces = _segments(source, params.segment_chars)
        done = 0
        report("tokenize", 0, len(source))
        for piece in pieces:
            ids.extend(tok.encode(piece))
            done += len(piece)
            report("tokenize", done, len(source))
        kind = "text"
        array = np.asarray(ids, dtype=np.int64)
    elif isinstance(source, (np.ndarray, Sequence)) and not isinstance(source, (bytes, bytearray)):
        array = np.asarray(source)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"dataset {dataset_id!r}: token ids must be a 1-D sequence of integers")
        kind = "token_ids"
        array = array.astype(np.int64)
        digest = hashlib.sha256(array.astype("<u4").tobytes()).hexdigest()
    else:
        raise TypeError(
            f"dataset {dataset_id!r}: pass the text as str, a file as pathlib.Path, or token ids; "
            f"got {type(source).__name__}"
        )
    if array.size == 0:
        raise ValueError(f"dataset {dataset_id!r} has no tokens; register a dataset with content")
    if array.min() < 0:
        raise ValueError(f"dataset {dataset_id!r}: token ids must be >= 0")
    return array.astype(token_dtype(int(array.max()))), kind, digest


def _segments(text: str, size: int) -> list[str]:
    """Cut text into pieces of about `size` chars, at line ends, so each is tokenized on its own.

    Tokenizing a piece alone equals tokenizing it inside the whole text except possibly at the
    cuts; cutting only after a newline keeps that to a handful of tokens per megabyte.
    """
    if len(text) <= size:
        return [text]
    pieces = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            newline = text.rfind("\n", start, end)
            if newline > start:
                end = newline + 1
        pieces.append(text[start:end])
        start = end
    return pieces
