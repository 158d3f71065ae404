"""One dataset's attribution index: token array + suffix array + chunk embeddings + manifest.

Layout of an index directory (arrays memory-mapped on load):
    manifest.json        dataset id, content digest, sizes, dtypes, tokenizer/embedder ids, params
    tokens.npy           the dataset's tokens, uint16 (or uint32 for vocabularies over 65536)
    suffix_array.npy     positions sorted by suffix, the smallest unsigned dtype that holds them
    chunk_starts.npy     token offset of each semantic chunk (uint32)
    chunk_embeddings.npy one unit-length float16 row per chunk (absent for span-only indexes)
    chunk_embeddings.f32.npy  the same rows as float32, written on first use (chunk_matrix)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .params import INDEX_FORMAT_VERSION, IndexParams
from .progress import LogProgress, ProgressFn
from .semantic import embed_texts, window_starts, window_texts
from .suffix_array import build_suffix_array, token_dtype
from .tokenizer import TokenizerLike, as_tokenizer, check_embedder, tokenizer_id

MANIFEST = "manifest.json"
CHUNK_CACHE = "chunk_embeddings.f32.npy"  # float32 copy of chunk_embeddings, written on first use
_ARRAYS = ("tokens", "suffix_array", "chunk_starts", "chunk_embeddings")


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
    path: Path | None = None

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

        out = Path(out_dir)
        _check_out_dir(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # Written into a sibling temp dir and moved into place: a crash never leaves half an index.
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
        try:
            arrays = {
                "tokens": tokens,
                "suffix_array": sa,
                "chunk_starts": starts.astype(np.uint32),
                "chunk_embeddings": embeddings,
            }
            sizes = {}
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array, allow_pickle=False)
                sizes[name] = (tmp / f"{name}.npy").stat().st_size
            manifest = IndexManifest(
                format_version=INDEX_FORMAT_VERSION,
                dataset_id=dataset_id,
                content_kind=kind,
                content_sha256=digest,
                token_count=int(len(tokens)),
                token_dtype=str(tokens.dtype),
                suffix_array_dtype=str(sa.dtype),
                tokenizer_id=tokenizer_id(tok),
                embedder_id=None if embedder is None else embedder.model_id,
                embedding_dim=0 if embedder is None else int(embeddings.shape[1]),
                chunk_count=int(len(starts)),
                params=asdict(params),
                bytes=sizes,
            )
            (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return cls.load(out)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AttributionIndex:
        """Open an index built by build(); arrays are memory-mapped, not read into memory."""
        path = Path(directory)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"no attribution index at {path} (missing {MANIFEST}): "
                "build one with AttributionIndex.build(dataset_id, text, tokenizer, embedder, out_dir)"
            )
        try:
            raw = json.loads(manifest_path.read_text())
            manifest = IndexManifest(**raw)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{manifest_path} is not a valid index manifest ({exc}); rebuild the index"
            ) from exc
        if manifest.format_version != INDEX_FORMAT_VERSION:
            raise ValueError(
                f"index at {path} has format {manifest.format_version}, this engine reads "
                f"{INDEX_FORMAT_VERSION}: rebuild it with AttributionIndex.build"
            )
        arrays = {}
        for name in _ARRAYS:
            file = path / f"{name}.npy"
            if not file.is_file():
                raise FileNotFoundError(f"index at {path} is missing {file.name}: rebuild it")
            arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
        index = cls(manifest=manifest, path=path, **arrays)
        index.validate()
        return index

    def chunk_matrix(self) -> np.ndarray:
        """The chunk embeddings as float32, for the cosine matmul (BLAS has no float16 GEMM).

        Memory-mapped from a cache file beside the index, written once: every engine and process
        on the machine then shares one copy in the page cache instead of converting its own (10
        datasets of 1 M tokens: 252 MB each time). Converted in memory when the index has no
        folder or the folder cannot be written."""
        if self.path is None:
            return self._chunk_matrix_in_memory()
        cache = self.path / CHUNK_CACHE
        if not cache.is_file():
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as out:
                    np.save(out, self._chunk_matrix_in_memory(), allow_pickle=False)
                os.replace(tmp, cache)  # whole or not at all, if two processes race
            except OSError:
                tmp.unlink(missing_ok=True)
                return self._chunk_matrix_in_memory()
        matrix = np.load(cache, mmap_mode="r", allow_pickle=False)
        return matrix if matrix.shape == self.chunk_embeddings.shape else self._chunk_matrix_in_memory()

    def _chunk_matrix_in_memory(self) -> np.ndarray:
        return np.asarray(self.chunk_embeddings, dtype=np.float32)

    def validate(self) -> None:
        """Cheap consistency checks between the manifest and the arrays."""
        m = self.manifest
        problems = []
        if len(self.tokens) != m.token_count or len(self.suffix_array) != m.token_count:
            problems.append(
                f"token count {m.token_count} vs arrays {len(self.tokens)}/{len(self.suffix_array)}"
            )
        if len(self.chunk_starts) != m.chunk_count:
            problems.append(f"chunk count {m.chunk_count} vs {len(self.chunk_starts)} chunk starts")
        if m.embedder_id is not None and self.chunk_embeddings.shape != (m.chunk_count, m.embedding_dim):
            problems.append(f"chunk embeddings shape {self.chunk_embeddings.shape}")
        if problems:
            where = self.path or "memory"
            raise ValueError(f"attribution index {m.dataset_id!r} at {where} is inconsistent: "
                             + "; ".join(problems) + ". Rebuild it.")


def _check_out_dir(out: Path) -> None:
    # Refuse to wipe a folder that holds anything other than an earlier index.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise FileExistsError(
            f"{out} exists and is not an attribution index; pass an empty or new directory as out_dir"
        )


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
            raise ValueError(
                f"dataset {dataset_id!r} is empty (no text to index); register a dataset with content"
            )
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
