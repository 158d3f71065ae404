"""The attribution embedder: all-MiniLM-L6-v2 with int8 Linear layers, exact integer products,
and vectors that do not depend on which other texts share a batch.

MiniLM's float32 forward was most of an attribution's latency (24 ms of 31 on one thread of a
2-core CPU), and its Linear layers most of that forward. Here each Linear y = x W^T + b runs as

  * weights: int8 codes rint(W / s_w), one scale s_w = max|W_row| / 127 per output row;
  * activations, per token row: its largest entry (by magnitude, the first such) is set aside,
    and the others become int8 codes rint(x / s_x) with s_x = the next largest magnitude / 127.
    BERT's hidden states carry a few outlier channels (up to 15x a row's typical magnitude);
    letting one of them set the scale costs most of int8's error, setting it aside removes it;
  * y = s_x * s_w * (codes(x) . codes(W)) + b + x_peak * W[:, peak], the integer products
    summed exactly in int32 (torch._int_mm; float64 products, where it is missing, give the
    same integers) and the set-aside entry multiplied in float32.

Everything else (embeddings, attention, GELU, LayerNorm, mean pooling, L2 normalisation) is the
float32 BERT of sentence-transformers, written out so that no token row ever meets another
text's: the texts of a batch are packed one after another without padding, attention runs per
text, and every other step works row by row. A text's vector is therefore the same bits alone
or in any batch, and with 1 or 2 torch threads (tests/oracle/test_attribution_quantized.py);
on one machine it is the same run to run. Another CPU's float32 kernels may differ in the last
bits, which cosines rounded to 4 decimals almost always absorb, as for float32 MiniLM.

The vectors are not float32 MiniLM's (cosine >= 0.998 with them on the shipped corpora), hence
the embedder's own `model_id`: an engine compares query vectors only with chunk vectors of the
same embedder, and an index built with another is rebuilt (service.py). The bench measures its
agreement with float32 MiniLM over whole attributions (bench/attribution_bench.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .kernels import _CACHE, nb

# Bump when anything here can change a vector: the id names this very recipe.
RECIPE = "int8.1"


def quantized_model_id(base_model_id: str) -> str:
    return f"{base_model_id}+{RECIPE}"


class Int8Linear:
    """x @ W.T + b on int8 codes: per-output-row weight scales, per-token-row activation scales,
    and each token row's largest entry (by magnitude) multiplied in float32 instead."""

    def __init__(self, weight, bias) -> None:
        import torch

        w = weight.detach().to(torch.float64)
        scale = w.abs().amax(dim=1).clamp_min(1e-30) / 127
        self.codes = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8).t().contiguous()  # (in, out)
        self.scale = scale.to(torch.float32).numpy().copy()
        self.weight = weight.detach().to(torch.float32).t().contiguous().numpy()  # (in, out): the peaks' rows
        self.bias = bias.detach().to(torch.float32).numpy().copy()

    def __call__(self, x, residual=None):
        """x (rows, in) float32 -> (rows, out) float32, plus `residual` (rows, out) when given."""
        import torch

        rows = x.shape[0]
        codes = torch.empty(x.shape, dtype=torch.int8)
        scale = np.empty(rows, dtype=np.float32)
        peak_at = np.empty(rows, dtype=np.int64)
        peak = np.empty(rows, dtype=np.float32)
        _quantize(x.numpy(), codes.numpy(), scale, peak_at, peak)
        acc = int_mm(codes, self.codes)
        out = torch.empty((rows, self.codes.shape[1]), dtype=torch.float32)
        extra = _NO_RESIDUAL if residual is None else residual.numpy()
        _dequantize(acc.numpy(), scale, self.scale, self.bias, peak_at, peak, self.weight, extra, out.numpy())
        return out


_NO_RESIDUAL = np.zeros((0, 0), dtype=np.float32)
_MAGNITUDE = np.int32(0x7FFFFFFF)  # a float32's bits less its sign: non-negative floats order as these do


@nb.njit(cache=_CACHE, nogil=True)
def _largest(bits, lo, hi):
    top = np.int32(0)
    for j in range(lo, hi):
        top = max(top, bits[j] & _MAGNITUDE)
    return top


@nb.njit(cache=_CACHE, nogil=True)
def _quantize(x, codes, scale, peak_at, peak):
    """Per row: the first entry of largest magnitude (peak_at, peak), kept out of the codes (0
    there); the others' int8 codes rint(x / s) with s = the next largest magnitude / 127."""
    rows, cols = x.shape
    magnitude = np.empty(1, dtype=np.int32)
    for i in range(rows):
        bits = x[i].view(np.int32)
        top = _largest(bits, 0, cols)
        c = 0
        while (bits[c] & _MAGNITUDE) != top:
            c += 1
        magnitude[0] = max(_largest(bits, 0, c), _largest(bits, c + 1, cols))
        rest = max(magnitude.view(np.float32)[0], np.float32(1e-30))
        scale[i] = rest / np.float32(127)
        inverse = np.float32(127) / rest
        for j in range(cols):  # only the peak's can pass 127: it is zeroed below
            codes[i, j] = np.int8(min(max(np.rint(x[i, j] * inverse), np.float32(-127)), np.float32(127)))
        codes[i, c] = 0
        peak_at[i] = c
        peak[i] = x[i, c]


@nb.njit(cache=_CACHE, nogil=True)
def _dequantize(acc, row_scale, col_scale, bias, peak_at, peak, weight, residual, out):
    rows, cols = out.shape
    for i in range(rows):
        w = weight[peak_at[i]]
        for j in range(cols):
            y = np.float32(acc[i, j]) * (row_scale[i] * col_scale[j]) + bias[j] + peak[i] * w[j]
            if residual.shape[0]:
                y += residual[i, j]
            out[i, j] = y


def int_mm(a, b):
    """a @ b for int8 matrices, as exact int32 sums."""
    import torch

    global _use_int_mm
    if _use_int_mm:
        try:
            return torch._int_mm(a, b)
        except (RuntimeError, AttributeError, NotImplementedError):  # a torch without it for these shapes
            _use_int_mm = False
    # |sum| <= 127 * 127 * 1536 < 2**53: float64 products and sums are exact, hence the same integers.
    return torch.matmul(a.to(torch.float64), b.to(torch.float64)).to(torch.int32)


_use_int_mm = True


class QuantizedEmbedder:
    """An EmbedderLike (model_id, dim, encode) for a sentence-transformers BERT folder with mean
    pooling; the shipped all-MiniLM-L6-v2 is the one it is built and tested for."""

    def __init__(self, path: Path, base_model_id: str, threads: int | None = 1) -> None:
        """`threads`: torch intra-op threads for each call (None: leave torch's setting). One by
        default: the vectors are the same bits with any number, and on a small shared CPU every
        op of a forward on two threads waits for the second whenever another process holds a
        core (measured on 2 loaded cores: 5 ms on one thread, 5 to 65 ms on two)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        from tributa.ml.embeddings import _max_seq_length, sentence_pipeline

        self._torch = torch
        path = Path(path)
        pooling, self.normalize = sentence_pipeline(path)
        config = json.loads((path / "config.json").read_text())
        if (
            pooling,
            config.get("model_type"),
            config.get("hidden_act"),
            config.get("position_embedding_type", "absolute"),
        ) != ("mean", "bert", "gelu", "absolute"):
            raise ValueError(f"{path}: the quantized embedder serves BERT folders with mean pooling only")
        self.model_id: str = quantized_model_id(base_model_id)
        self.threads = threads
        self.max_seq_length = _max_seq_length(path)
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_seq_length)
        model = AutoModel.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False
        ).eval()
        cfg = model.config
        self.dim: int = int(cfg.hidden_size)
        self._heads = int(cfg.num_attention_heads)
        self._attention_scale = 1 / math.sqrt(self.dim // self._heads)
        e = model.embeddings
        with torch.no_grad():
            self._word = e.word_embeddings.weight.detach().float().clone()
            self._position = e.position_embeddings.weight.detach().float().clone()
            self._type0 = e.token_type_embeddings.weight.detach()[0].float().clone()
            self._norm0 = _norm(e.LayerNorm)
            self._layers = []
            for layer in model.encoder.layer:
                a = layer.attention
                qkv_w = torch.cat([a.self.query.weight, a.self.key.weight, a.self.value.weight])
                qkv_b = torch.cat([a.self.query.bias, a.self.key.bias, a.self.value.bias])
                self._layers.append(
                    (
                        Int8Linear(qkv_w, qkv_b),
                        Int8Linear(a.output.dense.weight, a.output.dense.bias),
                        _norm(a.output.LayerNorm),
                        Int8Linear(layer.intermediate.dense.weight, layer.intermediate.dense.bias),
                        Int8Linear(layer.output.dense.weight, layer.output.dense.bias),
                        _norm(layer.output.LayerNorm),
                    )
                )
        del model

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """MiniLM's word pieces of each text, [CLS] and [SEP] included, truncated as the float32
        embedder truncates them (max_seq_length)."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed `texts` -> array (len(texts), dim), float32, each row of unit length."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings; wrap a single text as [text].")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str.")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        torch = self._torch
        with torch.inference_mode(), _torch_threads(torch, self.threads):
            for start in range(0, len(texts), batch_size):
                ids = self.token_ids(texts[start : start + batch_size])
                out[start : start + len(ids)] = self._forward(ids).numpy()
        return out

    def _forward(self, ids: list[list[int]]):
        """The pooled (and normalised) vectors of these texts' word pieces, packed without padding."""
        torch = self._torch
        F = torch.nn.functional
        lengths = [len(i) for i in ids]
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        flat = torch.tensor([t for i in ids for t in i], dtype=torch.int64)
        positions = torch.tensor([p for n in lengths for p in range(n)], dtype=torch.int64)
        d, heads = self.dim, self._heads
        h = F.layer_norm(self._word[flat] + self._position[positions] + self._type0, (d,), *self._norm0)
        spans = list(itertools.pairwise(bounds))
        for qkv, attention_output, norm1, intermediate, output, norm2 in self._layers:
            x = qkv(h)
            parts = []
            for lo, hi in spans:
                q, k, v = x[lo:hi].view(hi - lo, 3, heads, d // heads).permute(1, 2, 0, 3)  # each (heads, L, head dim)
                scores = torch.matmul(q, k.transpose(1, 2)).mul_(self._attention_scale)
                parts.append(torch.matmul(torch.softmax(scores, dim=-1), v).transpose(0, 1).reshape(hi - lo, d))
            a = parts[0] if len(parts) == 1 else torch.cat(parts)
            h = F.layer_norm(attention_output(a, h), (d,), *norm1)
            h = F.layer_norm(output(F.gelu(intermediate(h)), h), (d,), *norm2)
        pooled = torch.stack([h[lo:hi].mean(dim=0) for lo, hi in spans])
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled


_threads_lock = threading.Lock()


@contextlib.contextmanager
def _torch_threads(torch, threads: int | None):
    """torch's intra-op thread count set to `threads` for the block (process-wide: torch has no
    other kind), then put back."""
    if threads is None or torch.get_num_threads() == threads:
        yield
        return
    with _threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _norm(layer_norm) -> tuple:
    return (layer_norm.weight.detach().float().clone(), layer_norm.bias.detach().float().clone(), float(layer_norm.eps))


_LOADED: dict[str, QuantizedEmbedder] = {}


def load_quantized_embedder() -> QuantizedEmbedder:
    """The process-wide quantized all-MiniLM-L6-v2 (CPU), loaded once."""
    from tributa.ml.embeddings import MODEL_ID, model_dir

    if MODEL_ID not in _LOADED:
        _LOADED[MODEL_ID] = QuantizedEmbedder(model_dir(), MODEL_ID)
    return _LOADED[MODEL_ID]
