"""Attribution figures: query latency over 10M indexed tokens, index size and build speed.

The 10M-token bench corpus is generated as token ids directly (no tokenizer pass, which alone
would take minutes on two cores): each of 10 datasets is a seeded salad of 1-16-token pieces cut
from the shipped demo corpora (tokenized once with the project's BPE), with 2% of tokens replaced
by random vocabulary ids. Embedding 10M tokens of chunks with MiniLM on CPU would take hours, so
each dataset gets a chunk matrix of the size the default chunking gives (IndexParams: 64-token
windows every 64 tokens), filled with seeded random unit vectors, and its int8 screen: the semantic
query screens and scores them as it would real embeddings (random rows reach the threshold less
often than real ones, so fewer are rescored; that part is small either way). The ten datasets are
searched as one span corpus (oracle/attribution/corpus.py), as the oracle's merged segments are.
Index build speed is reported both for that span index (token ids in) and for a complete build from
text (tokenize + suffix array + MiniLM chunk embeddings).

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

import itertools

from bench import tokengrams_peer
from oracle.attribution import AttributionEngine, AttributionIndex, IndexParams, as_tokenizer, workers
from oracle.attribution.corpus import SpanCorpus
from oracle.attribution.params import AttributionParams
from oracle.attribution.quantized import load_quantized_embedder
from oracle.attribution.screen import ChunkScreen
from oracle.attribution.semantic import top_chunks, top_chunks_reference, window_starts, window_texts
from oracle.attribution.spans import maximal_spans, maximal_spans_by_dataset, maximal_spans_reference
from oracle.attribution.suffix_array import SuffixArraySearch
from tributa.ml.embeddings import load_embedder
from tributa.ml.tokenizer import (
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
BIG_CORPUS_TOKENS = 100_000_000  # issue 17: one corpus of 100M tokens, spans in <= 2 ms


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
    rows = rows.astype(np.float16)
    screen = ChunkScreen.of(rows)
    manifest = dataclasses.replace(index.manifest, embedder_id=model_id, embedding_dim=dim, chunk_count=len(starts))
    return dataclasses.replace(
        index,
        manifest=manifest,
        chunk_starts=starts,
        chunk_embeddings=rows,
        chunk_screen_codes=screen.codes,
        chunk_screen_bounds=screen.bounds,
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


def _warm(engine: AttributionEngine, queries: list[np.ndarray]) -> None:
    """Page cache, BLAS, kernels and the embedder, on an output the timings do not use (the
    engine keeps the embeddings of outputs it has seen)."""
    engine.attribute(queries[0][::-1].copy())


def _latency_ms(
    engines: dict[str, tuple[AttributionEngine, int]], queries: list[np.ndarray], repeats: int = 3
) -> dict[str, float]:
    """Median ms of attribute() for each (engine, torch intra-op threads), interleaved query by
    query (same process, same pages, same noise). Each engine sees each output once: `repeats`
    rounds use reversed and shifted copies, which its query cache has not seen. The caller's
    thread setting is restored."""
    import torch

    previous = torch.get_num_threads()
    times: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for engine, threads in engines.values():
            torch.set_num_threads(threads)
            _warm(engine, queries)
        rounds = [queries] + [[np.roll(q, 7 * r) for q in queries] for r in range(1, repeats)]
        for ids in (q for batch in rounds for q in batch):
            for name, (engine, threads) in engines.items():
                torch.set_num_threads(threads)
                start = time.perf_counter()
                engine.attribute(ids)
                times[name].append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous)
    return {name: statistics.median(values) for name, values in times.items()}


def _stages_ms(engine: AttributionEngine, float32, queries: list[np.ndarray]) -> dict[str, float]:
    """Median ms of attribute()'s stages, one after the other: spans, the output's embedding, the
    semantic top-k; and, interleaved, the same windows through float32 MiniLM (`float32`) and the
    top-k by a float32 product with every chunk (the way before the screen). Raises if the two
    top-k disagree."""
    _warm(engine, queries)
    p, candidates = engine.params, engine.dataset_ids
    full = {d: np.asarray(embeddings, dtype=np.float32) for d, (embeddings, _) in engine._chunks.items()}
    times: dict[str, list[float]] = {"spans": [], "embed": [], "topk": [], "topk_full": [], "embed_float32": []}
    for ids in queries:
        marks = [time.perf_counter()]
        engine._span_evidence(ids, candidates, engine._span_search(ids, candidates))
        marks.append(time.perf_counter())
        starts = window_starts(len(ids), p.query_window_tokens, p.query_window_stride)
        texts = window_texts(ids, starts, p.query_window_tokens, engine.tokenizer.decode)
        embedded = engine._embed(texts)
        marks.append(time.perf_counter())
        screened = top_chunks(embedded, engine._chunks, p.threshold_e4, p.top_k)
        marks.append(time.perf_counter())
        if screened != top_chunks_reference(embedded, full, p.threshold_e4, p.top_k):
            raise AssertionError(f"screened top-k differs from the full product on output {ids.tolist()}")
        marks.append(time.perf_counter())
        float32.encode(list(dict.fromkeys(texts)))
        marks.append(time.perf_counter())
        for name, (a, b) in zip(times, itertools.pairwise(marks), strict=False):
            times[name].append((b - a) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def _agreement(root: Path, texts: list[str], tokenizer, float32, quantized) -> dict[str, float]:
    """Quantized MiniLM against float32 MiniLM on real text: the shipped corpora indexed by each
    (chunk vectors of its own), the same 64-token outputs attributed by each engine. Returns the
    mean top-k recall (float32's chunks the quantized engine also reports), the share of outputs
    with identical weights, the largest and 90th-percentile weight move (bps), the smallest cosine
    between the two embedders' vectors of a chunk, and the build speed of each (tokens/s)."""
    engines, built, seconds = {}, {}, {}
    for name, embedder in (("float32", float32), ("quantized", quantized)):
        start = time.perf_counter()
        built[name] = [
            AttributionIndex.build(f"corpus-{i}", t, tokenizer, embedder, root / f"agree-{name}-{i}", _quiet)
            for i, t in enumerate(texts)
        ]
        seconds[name] = time.perf_counter() - start
        engines[name] = AttributionEngine(built[name], tokenizer, embedder)
    tokens = sum(ix.token_count for ix in built["float32"])
    cosines = np.concatenate(
        [
            (np.asarray(a.chunk_embeddings, np.float32) * np.asarray(b.chunk_embeddings, np.float32)).sum(axis=1)
            for a, b in zip(built["float32"], built["quantized"], strict=False)
        ]
    )
    outputs = _corpus_outputs([np.asarray(ix.tokens).astype(np.int64) for ix in built["float32"]], seed=6000)
    recall, moved, same = [], [], 0
    for ids in outputs:
        a, b = engines["float32"].attribute(ids), engines["quantized"].attribute(ids)
        wanted = {(c.dataset_id, c.chunk_index) for c in a.chunks}
        if wanted:
            recall.append(len(wanted & {(c.dataset_id, c.chunk_index) for c in b.chunks}) / len(wanted))
        moved.append(
            max(
                (
                    abs(a.weights_bps.get(d, 0) - b.weights_bps.get(d, 0))
                    for d in set(a.weights_bps) | set(b.weights_bps)
                ),
                default=0,
            )
        )
        same += a.weights_bps == b.weights_bps
    return {
        "outputs": len(outputs),
        "chunks": len(cosines),
        "tokens": tokens,
        "recall": float(np.mean(recall)),
        "identical": same / len(outputs),
        "max_bps": float(max(moved)),
        "p90_bps": float(np.percentile(moved, 90)),
        "min_cosine": float(cosines.min()),
        "float32_tokens_per_s": tokens / seconds["float32"],
        "quantized_tokens_per_s": tokens / seconds["quantized"],
    }


def _corpus_outputs(corpora: list[np.ndarray], seed: int, n: int = 90) -> list[np.ndarray]:
    """64-token outputs from real corpora: a slice of one, or halves of two (every third), and
    every fourth with a third of its tokens replaced from another corpus, so that many reach the
    semantic threshold without a verbatim span."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        a = corpora[q % len(corpora)]
        start = int(rng.integers(0, len(a) - OUTPUT_TOKENS))
        ids = a[start : start + OUTPUT_TOKENS].copy()
        if q % 3 == 2:
            b = corpora[(q + 1) % len(corpora)]
            other = int(rng.integers(0, len(b) - OUTPUT_TOKENS // 2))
            ids[OUTPUT_TOKENS // 2 :] = b[other : other + OUTPUT_TOKENS // 2]
        if q % 4 == 3:
            swap = rng.random(OUTPUT_TOKENS) < 0.33
            c = corpora[(q + 2) % len(corpora)]
            ids[swap] = c[rng.integers(0, len(c), int(swap.sum()))]
        out.append(ids)
    return out


def _span_ms(
    corpus: SpanCorpus, searches: list, peer: list, queries: list[np.ndarray], n: int, repeats: int = 3
) -> dict[str, float]:
    """Median ms of one output's spans over every dataset: by the compiled search over the one
    corpus, by the compiled search on each dataset's own index, by the numpy reference and by
    tokengrams (driven from Python), interleaved query by query: same process, same pages, same
    noise. Raises if any two disagree on a span, its count or its offset."""
    contenders = {
        "compiled": lambda ids: maximal_spans_by_dataset(corpus.search, ids, n),
        "per_dataset": lambda ids: [maximal_spans(s, ids, n) for s in searches],
        "numpy": lambda ids: [maximal_spans_reference(s, ids, n) for s in searches],
        "tokengrams": lambda ids: [tokengrams_peer.maximal_spans(index, ids, n) for index in peer],
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for ids in queries:
            answers = []
            for name, spans_of in contenders.items():
                start = time.perf_counter()
                answers.append(spans_of(ids))
                times[name].append((time.perf_counter() - start) * 1000)
            if any(answer != answers[0] for answer in answers):
                raise AssertionError(f"span engines disagree on output {ids.tolist()}")
    return {name: statistics.median(values) for name, values in times.items()}


def _one_big_corpus(root: Path, source: np.ndarray, tokenizer) -> tuple[float, float, int]:
    """(p50 ms of the spans of 64-token outputs, the build's peak RSS MB, tokens) for one corpus
    of BIG_CORPUS_TOKENS tokens. It is generated and indexed in a fresh process, whose own peak
    RSS is the build's (this one holds MiniLM and ten mapped indexes); then searched here."""
    import shutil
    import subprocess

    print(f"attribution bench: indexing one corpus of {BIG_CORPUS_TOKENS:,} tokens ...", file=sys.stderr, flush=True)
    big = root / "big"
    np.save(root / "source.npy", source)
    done = subprocess.run(
        [sys.executable, "-c", f"from bench.attribution_bench import build_big; build_big({str(root)!r})"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building the {BIG_CORPUS_TOKENS:,}-token index failed:\n{done.stderr[-3000:]}")
    peak_mb = float(done.stdout.split()[-1])
    index = AttributionIndex.load(big)
    search = SuffixArraySearch(index.tokens, index.suffix_array)
    queries = _queries([np.asarray(index.tokens)], seed=5000)
    n = AttributionParams().min_span_tokens
    maximal_spans(search, queries[0], n)  # warm the pages it touches
    times = []
    for ids in queries * 3:
        start = time.perf_counter()
        maximal_spans(search, ids, n)
        times.append((time.perf_counter() - start) * 1000)
    del search, index
    shutil.rmtree(big, ignore_errors=True)
    return statistics.median(times), peak_mb, BIG_CORPUS_TOKENS


def build_big(root: str) -> None:
    """In its own process: generate the big corpus in 10 parts (the generator's temporaries stay
    small), index it, print this process's peak RSS in MB."""
    import resource

    source = np.load(Path(root) / "source.npy")
    tokenizer = load_tokenizer()
    part = BIG_CORPUS_TOKENS // 10
    tokens = np.concatenate([_salad(source, part, len(tokenizer), seed=4000 + i) for i in range(10)])
    AttributionIndex.build("big", tokens, tokenizer, None, Path(root) / "big", _quiet)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run(workdir: str | os.PathLike[str], torch_threads: int = 1) -> dict[str, float]:
    """Measure, print the table, return the figures. The headline latency runs with
    `torch_threads` intra-op threads (1, as this figure always has: on a small shared CPU the
    threads of one query's forward wait on each other whenever another process takes a core);
    one thread per core, torch's default and so the oracle's, is measured right after it.
    Other stages run with `torch_threads`; the previous setting is restored afterwards."""
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
    embedder = load_quantized_embedder()  # the oracle's (oracle/attribution/service.py)
    float32 = load_embedder("cpu")  # the baseline, in the same run

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
    start = time.perf_counter()
    corpus = SpanCorpus.from_indexes(span_indexes, root / "corpus")  # one suffix array over all ten
    corpus_build_s = time.perf_counter() - start
    span_bytes = sum(corpus.path.joinpath(f"{name}.npy").stat().st_size for name in ("tokens", "suffix_array"))

    # Complete builds from text, embeddings included, of the shipped corpora, by each embedder;
    # then the same outputs attributed against each.
    print("attribution bench: quantized against float32 MiniLM on the shipped corpora ...", file=sys.stderr, flush=True)
    agree = _agreement(root, texts, tokenizer, float32, embedder)

    semantic_indexes = [
        _with_random_chunks(ix, embedder.dim, embedder.model_id, seed=2000 + i) for i, ix in enumerate(span_indexes)
    ]
    float32_indexes = [  # the same random rows: the top-k does the same work for both
        _with_random_chunks(ix, float32.dim, float32.model_id, seed=2000 + i) for i, ix in enumerate(span_indexes)
    ]
    chunk_bytes = sum(
        ix.chunk_embeddings.nbytes
        + ix.chunk_starts.nbytes
        + ix.chunk_screen_codes.nbytes
        + ix.chunk_screen_bounds.nbytes
        for ix in semantic_indexes
    )
    chunk_rows = sum(ix.manifest.chunk_count for ix in semantic_indexes)

    queries = _queries(corpora, seed=3000)
    spans_only = AttributionEngine(span_indexes, tokenizer, None, corpora=[corpus])
    span_ms = _latency_ms({"spans": (spans_only, torch_threads)}, queries)["spans"]
    mean_spans = statistics.mean(len(spans_only.attribute(ids).spans) for ids in queries)

    def engine(indexes=semantic_indexes, with_embedder=embedder) -> AttributionEngine:
        return AttributionEngine(indexes, tokenizer, with_embedder, corpora=[corpus])

    cores = workers.cores()
    total = _latency_ms(
        {"quantized": (engine(), torch_threads), "float32": (engine(float32_indexes, float32), torch_threads)}, queries
    )
    # Apart, right after: switching torch's thread count between queries slows the next forward.
    total.update(_latency_ms({"threads_per_core": (engine(), cores)}, queries))
    stages = _stages_ms(engine(), float32, queries)
    tokengrams = tokengrams_peer.load_tokengrams()
    peer = [tokengrams_peer.build_index(tokengrams, tokens, len(tokenizer)) for tokens in corpora]
    searches = [SuffixArraySearch(ix.tokens, ix.suffix_array) for ix in span_indexes]
    span_times = _span_ms(corpus, searches, peer, queries, AttributionParams().min_span_tokens)
    del peer
    compiled_ms, numpy_ms, tokengrams_ms = span_times["compiled"], span_times["numpy"], span_times["tokengrams"]
    big_ms, big_rss_mb, big_tokens = _one_big_corpus(root, source, tokenizer)

    rows = [
        (
            "attribution_ms_p50",
            round(total["quantized"], 2),
            "ms",
            f"1 output of {OUTPUT_TOKENS} token ids vs {N_DATASETS} datasets ({total_tokens:,} tokens): "
            f"span search (on a pool thread, during the embedding) + quantized MiniLM query embedding "
            f"({embedder.model_id}, the oracle's) + exact cosine top-k over {chunk_rows:,} chunk rows; "
            f"median of {3 * N_QUERIES}; index build excluded",
        ),
        (
            "attribution_ms_p50_float32",
            round(total["float32"], 2),
            "ms",
            "the same with float32 MiniLM for query and chunk vectors (the embedder before), interleaved query by query",
        ),
        (
            "attribution_quantized_speedup",
            round(total["float32"] / total["quantized"], 2),
            "x",
            "float32 ÷ quantized, same queries, same run",
        ),
        (
            "attribution_ms_p50_threads_per_core",
            round(total["threads_per_core"], 2),
            "ms",
            f"the quantized engine under torch's default of {cores} intra-op threads (the oracle's setting; its "
            "forward still runs on one), measured right after",
        ),
        ("attribution_stage_spans_ms_p50", round(stages["spans"], 3), "ms", "of which: span search and span records"),
        (
            "attribution_stage_embed_ms_p50",
            round(stages["embed"], 2),
            "ms",
            "of which: the output's window texts and their quantized MiniLM embedding (one call)",
        ),
        (
            "attribution_stage_embed_float32_ms_p50",
            round(stages["embed_float32"], 2),
            "ms",
            "the same windows through float32 MiniLM, interleaved",
        ),
        (
            "attribution_stage_topk_ms_p50",
            round(stages["topk"], 3),
            "ms",
            "of which: int8 screen of every chunk, then float32 scores of those it leaves",
        ),
        (
            "attribution_topk_full_product_ms_p50",
            round(stages["topk_full"], 3),
            "ms",
            "the same top-k from a float32 product with every chunk (as before the screen), interleaved; equal results",
        ),
        (
            "attribution_topk_screen_speedup",
            round(stages["topk_full"] / stages["topk"], 1),
            "x",
            "full product ÷ screen, same queries, same run",
        ),
        (
            "attribution_span_ms_p50",
            round(span_ms, 2),
            "ms",
            f"attribute() with span evidence only ({mean_spans:.1f} maximal spans per output on average)",
        ),
        (
            "attribution_span_ms_p50_10x1m",
            round(compiled_ms, 3),
            "ms",
            f"the spans alone: one compiled search (oracle/attribution/kernels.py) over the {N_DATASETS} datasets' corpus",
        ),
        (
            "attribution_span_per_dataset_ms_p50_10x1m",
            round(span_times["per_dataset"], 3),
            "ms",
            "the same spans, compiled, searching each dataset's own index in turn, interleaved",
        ),
        (
            "attribution_span_numpy_ms_p50_10x1m",
            round(numpy_ms, 3),
            "ms",
            "the same queries through the vectorised numpy reference (per dataset), interleaved in this run",
        ),
        ("attribution_span_compiled_speedup", round(numpy_ms / compiled_ms, 1), "x", "numpy reference ÷ compiled"),
        (
            "attribution_span_tokengrams_ms_p50_10x1m",
            round(tokengrams_ms, 3),
            "ms",
            "the same spans through tokengrams 0.3.3 (Rust suffix arrays, per dataset) driven from Python, interleaved",
        ),
        (
            "attribution_span_vs_tokengrams_ratio",
            round(compiled_ms / tokengrams_ms, 3),
            "x",
            "compiled ÷ tokengrams on the same queries (target ≤ 1.0); all four agree on every span",
        ),
        (
            "attribution_span_ms_p50_100m",
            round(big_ms, 3),
            "ms",
            f"the spans of the same kind of outputs against one corpus of {big_tokens:,} tokens",
        ),
        (
            "attribution_index_build_100m_peak_rss_mb",
            round(big_rss_mb, 1),
            "MB",
            "this process's peak RSS once that corpus is generated and indexed (an upper bound on the build's)",
        ),
        (
            "attribution_index_bytes_per_token",
            round(span_bytes / total_tokens, 3),
            "B/token",
            "the corpus searched: token array (uint16) + suffix array (uint32) on disk, separators included; Infini-gram: ~7",
        ),
        (
            "attribution_index_bytes_per_token_with_embeddings",
            round((span_bytes + chunk_bytes) / total_tokens, 3),
            "B/token",
            f"plus float16 chunk embeddings ({IndexParams().chunk_tokens}-token windows every "
            f"{IndexParams().chunk_stride} tokens), their int8 screen and chunk starts",
        ),
        (
            "attribution_index_build_tokens_per_s",
            round(total_tokens / build_s),
            "tokens/s",
            "span index from token ids: suffix array + write, 10 datasets",
        ),
        (
            "attribution_corpus_build_tokens_per_s",
            round(total_tokens / corpus_build_s),
            "tokens/s",
            "the ten datasets' indexes joined into one corpus: concatenation + suffix array + write",
        ),
        (
            "attribution_index_full_build_tokens_per_s",
            round(agree["quantized_tokens_per_s"], 1),
            "tokens/s",
            f"from text, the {len(names)} shipped corpora ({agree['tokens']:,} tokens): tokenize + suffix array + "
            "quantized MiniLM chunk embeddings, one torch thread",
        ),
        (
            "attribution_index_full_build_float32_tokens_per_s",
            round(agree["float32_tokens_per_s"], 1),
            "tokens/s",
            "the same with float32 MiniLM, one torch thread",
        ),
        (
            "attribution_quantized_topk_recall",
            round(agree["recall"], 4),
            "",
            f"quantized vs float32 MiniLM, each over its own chunk vectors of the shipped corpora ({agree['chunks']} "
            f"chunks), {agree['outputs']} outputs cut from them: share of float32's top-{AttributionParams().top_k} "
            "chunks the quantized engine also reports (mean over outputs with any)",
        ),
        (
            "attribution_quantized_weights_identical_share",
            round(agree["identical"], 3),
            "",
            "outputs whose weights (bps) are identical",
        ),
        (
            "attribution_quantized_weight_max_diff_bps",
            agree["max_bps"],
            "bps",
            f"the largest move of one dataset's weight (90th percentile: {agree['p90_bps']:g})",
        ),
        (
            "attribution_quantized_min_chunk_cosine",
            round(agree["min_cosine"], 5),
            "",
            "the smallest cosine between a chunk's two vectors (float16 as stored)",
        ),
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
