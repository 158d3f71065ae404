"""Attribution figures: query latency over 10M indexed tokens, index size and build speed.

The 10M-token bench corpus is generated as token ids directly (no tokenizer pass, which alone
would take minutes on two cores): each of 10 datasets is a seeded salad of 1-16-token pieces cut
from the shipped demo corpora (tokenized once with the project's BPE), with 2% of tokens replaced
by random vocabulary ids. Embedding 10M tokens of chunks with MiniLM on CPU would take hours, so
each dataset gets a chunk matrix of the size the default chunking gives (IndexParams: 64-token
windows every 64 tokens), filled with seeded random unit vectors: the semantic query does the same matmul and
top-k as on real embeddings. Index build speed is reported both for that span index (token ids in)
and for a complete build from text (tokenize + suffix array + MiniLM chunk embeddings).

    .venv/bin/python -m bench.attribution_bench
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from oracle.attribution import AttributionEngine, AttributionIndex, IndexParams, as_tokenizer  # noqa: E402
from oracle.attribution.semantic import window_starts  # noqa: E402
from tributa.ml.embeddings import load_embedder  # noqa: E402
from tributa.ml.tokenizer import (  # noqa: E402
    DATASETS_DIR,
    demo_dataset_dirs,
    load_tokenizer,
    read_dataset_text,
)

N_DATASETS = 10
TOKENS_PER_DATASET = 1_050_000  # 10.5M in all
OUTPUT_TOKENS = 64
N_QUERIES = 24
SUBSTITUTION_RATE = 0.02


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def _salad(source: np.ndarray, n_tokens: int, vocab: int, seed: int) -> np.ndarray:
    """n_tokens made of random 1-16-token pieces of `source`, 2% of them then substituted."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 17, size=n_tokens // 4)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n_tokens) + 1]
    starts = rng.integers(0, len(source) - 16, size=len(lengths))
    # Index of every output token: piece start + position inside the piece.
    piece = np.repeat(np.arange(len(lengths)), lengths)
    inside = np.arange(len(piece)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tokens = source[starts[piece] + inside][:n_tokens].copy()
    swap = rng.random(n_tokens) < SUBSTITUTION_RATE
    tokens[swap] = rng.integers(0, vocab, size=int(swap.sum()))
    return tokens.astype(np.uint16)


def _with_random_chunks(index: AttributionIndex, dim: int, model_id: str, seed: int) -> AttributionIndex:
    """The index with a chunk matrix of default-chunking size, of seeded random unit rows."""
    p = IndexParams()
    starts = window_starts(index.token_count, p.chunk_tokens, p.chunk_stride).astype(np.uint32)
    rows = np.random.default_rng(seed).standard_normal((len(starts), dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    manifest = dataclasses.replace(
        index.manifest, embedder_id=model_id, embedding_dim=dim, chunk_count=len(starts)
    )
    return dataclasses.replace(
        index, manifest=manifest, chunk_starts=starts, chunk_embeddings=rows.astype(np.float16)
    )


def _queries(datasets: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """64-token outputs: verbatim slices of one dataset, or halves of two (every third query)."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(N_QUERIES):
        a = datasets[q % len(datasets)]
        start = int(rng.integers(0, len(a) - OUTPUT_TOKENS))
        ids = a[start : start + OUTPUT_TOKENS].astype(np.int64)
        if q % 3 == 2:
            b = datasets[(q + 5) % len(datasets)]
            other = int(rng.integers(0, len(b) - OUTPUT_TOKENS))
            ids[OUTPUT_TOKENS // 2 :] = b[other : other + OUTPUT_TOKENS // 2]
        out.append(ids)
    return out


def _p50_ms(engine: AttributionEngine, queries: list[np.ndarray]) -> tuple[float, float]:
    engine.attribute(queries[0])  # warm caches (page cache, BLAS, the embedder)
    times, spans = [], []
    for ids in queries:
        start = time.perf_counter()
        record = engine.attribute(ids)
        times.append((time.perf_counter() - start) * 1000)
        spans.append(len(record.spans))
    return statistics.median(times), statistics.mean(spans)


def run(workdir: str | os.PathLike[str], torch_threads: int = 1) -> dict[str, float]:
    """Measure, print the table, return the figures. `torch_threads` applies during the run only:
    on a small shared CPU, one intra-op thread embeds a single query window fastest (more threads
    spin-wait on each other); the previous setting is restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        return _run(Path(workdir), torch_threads)
    finally:
        torch.set_num_threads(previous)


def _run(workdir: Path, torch_threads: int) -> dict[str, float]:
    root = workdir / "attribution-bench"
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer()
    embedder = load_embedder("cpu")

    print("attribution bench: generating the token corpus ...", file=sys.stderr, flush=True)
    names = sorted(demo_dataset_dirs())
    texts = [read_dataset_text(DATASETS_DIR / n) for n in names]
    source = np.concatenate([np.asarray(as_tokenizer(tokenizer).encode(t)) for t in texts])
    corpora = [_salad(source, TOKENS_PER_DATASET, len(tokenizer), seed=1000 + i) for i in range(N_DATASETS)]

    build_s = 0.0
    span_indexes = []
    for i, tokens in enumerate(corpora):
        start = time.perf_counter()
        index = AttributionIndex.build(f"bench-{i}", tokens, tokenizer, None, root / f"bench-{i}", _quiet)
        build_s += time.perf_counter() - start
        span_indexes.append(index)
        print(f"  indexed bench-{i}: {len(tokens):,} tokens", file=sys.stderr, flush=True)
    total_tokens = sum(ix.token_count for ix in span_indexes)
    span_bytes = sum(ix.manifest.bytes["tokens"] + ix.manifest.bytes["suffix_array"] for ix in span_indexes)

    # A complete build from text, embeddings included, on one shipped demo corpus.
    start = time.perf_counter()
    full = AttributionIndex.build("demo", texts[0], tokenizer, embedder, root / "demo-full", _quiet)
    full_build_s = time.perf_counter() - start
    full_bytes_per_token = sum(full.manifest.bytes.values()) / full.token_count

    semantic_indexes = [
        _with_random_chunks(ix, embedder.dim, embedder.model_id, seed=2000 + i)
        for i, ix in enumerate(span_indexes)
    ]
    chunk_bytes = sum(ix.chunk_embeddings.nbytes + ix.chunk_starts.nbytes for ix in semantic_indexes)
    chunk_rows = sum(ix.manifest.chunk_count for ix in semantic_indexes)

    queries = _queries(corpora, seed=3000)
    span_ms, mean_spans = _p50_ms(AttributionEngine(span_indexes, tokenizer, None), queries)
    total_ms, _ = _p50_ms(AttributionEngine(semantic_indexes, tokenizer, embedder), queries)

    rows = [
        ("attribution_ms_p50", round(total_ms, 2), "ms",
         f"1 output of {OUTPUT_TOKENS} token ids vs {N_DATASETS} datasets ({total_tokens:,} tokens): "
         f"span search + MiniLM query embedding + cosine top-k over {chunk_rows:,} chunk rows; "
         f"median of {N_QUERIES}; index build excluded"),
        ("attribution_span_ms_p50", round(span_ms, 2), "ms",
         f"the same, span evidence only ({mean_spans:.1f} maximal spans per output on average)"),
        ("attribution_index_bytes_per_token", round(span_bytes / total_tokens, 3), "B/token",
         "token array (uint16) + suffix array (uint32) on disk; Infini-gram: ~7"),
        ("attribution_index_bytes_per_token_with_embeddings",
         round((span_bytes + chunk_bytes) / total_tokens, 3), "B/token",
         f"plus float16 chunk embeddings ({IndexParams().chunk_tokens}-token windows every "
         f"{IndexParams().chunk_stride} tokens) and chunk starts"),
        ("attribution_index_build_tokens_per_s", round(total_tokens / build_s), "tokens/s",
         "span index from token ids: suffix array + write, 10 datasets"),
        ("attribution_index_full_build_tokens_per_s", round(full.token_count / full_build_s, 1), "tokens/s",
         f"from text, '{names[0]}' demo corpus ({full.token_count:,} tokens, {full_bytes_per_token:.1f} "
         "B/token): tokenize + suffix array + MiniLM chunk embeddings on CPU"),
    ]
    _print_table(rows, f"attribution bench ({os.cpu_count()} CPUs, torch intra-op threads: {torch_threads})")
    return {name: float(value) for name, value, _, _ in rows}


def _print_table(rows: list[tuple[str, float, str, str]], title: str) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}")
    print(f"{'figure':<{width}}  {'value':>12}  {'unit':<8}  what it includes")
    for name, value, unit, what in rows:
        print(f"{name:<{width}}  {value:>12,}  {unit:<8}  {what}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        run(tmp)
