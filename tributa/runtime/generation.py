"""Greedy text generation from one base model serving many LoRA adapters (OpenLoRA-style).

The base weights are loaded once; adapters are loaded beside them with peft (an LRU cache of
`max_adapters`), and a batch mixes adapters and the bare base row by row (peft's
`adapter_names`), so requests for different adapters share one forward pass. Decoding is greedy
only, and a row's tokens do not depend on what else is in its batch, so anyone with the same
weights can re-run a request and get the same tokens.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from peft import PeftModel
from transformers import GenerationConfig, GenerationMixin

from tributa.ml.models import ModelFolderError, file_sha256, load_causal_lm
from tributa.registry import MAX_NEW_TOKENS_CAP as MAX_NEW_TOKENS_LIMIT  # one cap with the registry
from tributa.runtime.errors import InferenceInputError

DEFAULT_MAX_ADAPTERS = 32
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device() -> str:
    """CUDA when present, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """fp32 on CPU (fast and exact there); bf16 on a GPU that has it, else fp16."""
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue: with `adapter` (a loaded adapter's name; None: the bare base),
    at most `max_new_tokens` new tokens, and `chat` wrapping it in the tokenizer's chat template."""

    prompt: str
    adapter: str | None = None
    max_new_tokens: int = 32
    chat: bool = False


@dataclass(frozen=True)
class GenerationResult:
    """One greedy generation: the new text and tokens (prompt excluded) and how long it took."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: str  # "eos" (the model ended the text) or "length" (max_new_tokens reached)
    model_id: str  # sha256 of the base weights files: the same on every agent with that model
    adapter: str | None
    timings: dict[str, float] = field(compare=False)


class GenerationRunner:
    """A base causal LM loaded once, plus named LoRA adapters switched per request.

    Thread-safe: requests are serialised, because the active adapter is state of the shared model.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        device: str | None = None,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
        dtype: str | None = None,
    ) -> None:
        if max_adapters < 1:
            raise ValueError(f"max_adapters must be >= 1, got {max_adapters}")
        self.base_dir = Path(base_dir).expanduser().resolve()
        self.device = device or default_device()
        self.dtype = dtype or default_dtype(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        started = time.perf_counter()
        self._base, self.tokenizer = load_causal_lm(self.base_dir, self.device, DTYPES[self.dtype])
        self.stop_ids = _stop_ids(self._base, self.tokenizer)
        eos = self.tokenizer.eos_token_id
        self._pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
        )
        self.model_id = weights_digest(self.base_dir)
        self.load_seconds = time.perf_counter() - started
        self.context_length = _context_length(self._base.config)
        self._peft: PeftModel | None = None
        self._adapters: OrderedDict[str, Path] = OrderedDict()  # least recently used first
        self._max_adapters = max_adapters
        self._lock = threading.RLock()

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the adapters currently loaded."""
        return tuple(self._adapters)

    def load_adapter(self, name: str, adapter_dir: str | os.PathLike[str]) -> None:
        """Load a peft LoRA adapter under `name`; loading the same folder again is a no-op."""
        path = Path(adapter_dir).expanduser().resolve()
        with self._lock:
            if name in self._adapters:
                if self._adapters[name] != path:
                    raise InferenceInputError(
                        f"adapter name {name!r} is already loaded from {self._adapters[name]}; "
                        f"pick another name for {path}"
                    )
                self._adapters.move_to_end(name)
                return
            if not (path / "adapter_config.json").is_file():
                raise ModelFolderError(f"{path} is not a peft adapter folder (no adapter_config.json)")
            self._evict_if_full()
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(
                        self._base, str(path), adapter_name=name, torch_device=self.device
                    )
                else:
                    self._peft.load_adapter(str(path), adapter_name=name, torch_device=self.device)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ModelFolderError(f"adapter {path} does not fit base model {self.base_dir}: {exc}") from exc
            self._peft.eval()
            self._adapters[name] = path

    def _evict_if_full(self) -> None:
        # Drop the least recently used adapter; the base and the other adapters stay loaded.
        while self._peft is not None and len(self._adapters) >= self._max_adapters:
            victim, _ = self._adapters.popitem(last=False)
            self._peft.delete_adapter(victim)

    def count_tokens(self, prompt: str) -> int:
        """How many tokens `prompt` encodes to with this model's tokenizer (BOS included)."""
        with self._lock:
            return len(self._prompt_ids(GenerationRequest(prompt)))

    def generate(
        self, prompt: str, adapter: str | None = None, max_new_tokens: int = 32, chat: bool = False
    ) -> GenerationResult:
        """Greedy continuation of `prompt` with `adapter` active (None: the bare base model)."""
        result = self.generate_batch([GenerationRequest(prompt, adapter, max_new_tokens, chat)])[0]
        if isinstance(result, InferenceInputError):
            raise result
        return result

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | InferenceInputError]:
        """Greedy generation for many requests at once, across mixed adapters and the bare base.

        The valid requests run as one left-padded batch (peft's `adapter_names` routes each row
        through its own adapter); each row's tokens equal what it gets alone. A request that
        cannot run gets its InferenceInputError in its slot; the others still run."""
        started = time.perf_counter()
        with self._lock:  # the tokenizer, the adapter cache and the model are shared
            slots: list[GenerationResult | InferenceInputError | None] = [None] * len(requests)
            rows: list[tuple[int, GenerationRequest, list[int]]] = []
            for i, request in enumerate(requests):
                try:
                    rows.append((i, request, self._checked_ids(request)))
                except InferenceInputError as exc:
                    slots[i] = exc
            tokenized = time.perf_counter()
            if rows:
                outputs = self._greedy_batch(rows)
                generated = time.perf_counter()
                timings = {
                    "tokenize_ms": (tokenized - started) * 1e3,
                    "generate_ms": (generated - tokenized) * 1e3,
                    "batch_size": float(len(rows)),
                }
                for (i, request, ids), new_ids in zip(rows, outputs, strict=False):
                    slots[i] = self._result(request, ids, new_ids, timings)
                timings["total_ms"] = (time.perf_counter() - started) * 1e3
        return slots  # type: ignore[return-value]

    def rescore(self, request: GenerationRequest, claimed_token_ids: Sequence[int]) -> list[float]:
        """Teacher-forced margins of a claimed continuation of `request`: per claimed token, this
        model's highest logit minus the claimed token's logit at that position (0: the claimed
        token is this model's greedy choice). One forward pass over prompt + claim, routed
        through the request's adapter as generation is."""
        claimed = [int(t) for t in claimed_token_ids]
        if not claimed:
            return []
        with self._lock:
            ids = self._checked_ids(request)
            if any(not 0 <= t < self._vocab_size() for t in claimed):
                raise InferenceInputError("a claimed token id is outside this model's vocabulary")
            # The last claimed token predicts nothing we check, so it is not fed.
            input_ids = torch.tensor([ids + claimed[:-1]], dtype=torch.long, device=self.device)
            kwargs: dict[str, object] = {}
            model: torch.nn.Module = self._base
            if self._peft is not None:
                model = self._peft
                kwargs["adapter_names"] = [request.adapter or BASE_ADAPTER]
            with torch.inference_mode():
                logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs).logits
            scores = logits[0, len(ids) - 1 :].float()
            target = torch.tensor(claimed, device=scores.device)
            margins = scores.max(dim=-1).values - scores.gather(1, target[:, None])[:, 0]
            return [float(m) for m in margins.tolist()]

    def _vocab_size(self) -> int:
        return int(self._base.get_output_embeddings().weight.shape[0])

    def _checked_ids(self, request: GenerationRequest) -> list[int]:
        prompt, max_new_tokens = request.prompt, request.max_new_tokens
        if not isinstance(prompt, str) or not prompt:
            raise InferenceInputError("prompt must be a non-empty string")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise InferenceInputError(f"max_new_tokens must be an integer, got {type(max_new_tokens).__name__}")
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InferenceInputError(
                f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {max_new_tokens}"
            )
        if request.adapter is not None and request.adapter not in self._adapters:
            loaded = ", ".join(self._adapters) or "none"
            raise InferenceInputError(
                f"adapter {request.adapter!r} is not loaded (loaded: {loaded}); load it with "
                "load_adapter(name, folder) first"
            )
        ids = self._prompt_ids(request)
        if len(ids) + max_new_tokens > self.context_length:
            raise InferenceInputError(
                f"prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} that "
                f"exceeds the model's context of {self.context_length} tokens: shorten the "
                "prompt or ask for fewer new tokens"
            )
        return ids

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        # As plain transformers does: the tokenizer's own special tokens (BOS where it adds one),
        # or, for a chat request, the tokenizer's chat template around one user turn.
        if request.chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise InferenceInputError(
                    'this model\'s tokenizer has no chat template; send the prompt without "chat"'
                )
            messages = [{"role": "user", "content": request.prompt}]
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return list(ids)
        return list(self.tokenizer(request.prompt, verbose=False)["input_ids"])

    def _greedy_batch(self, rows: list[tuple[int, GenerationRequest, list[int]]]) -> list[list[int]]:
        """New tokens per row: left-padded, one generate call, each row cut at its own limit."""
        width = max(len(ids) for _, _, ids in rows)
        pad = self._pad_id
        input_ids = torch.tensor(
            [[pad] * (width - len(ids)) + ids for _, _, ids in rows], dtype=torch.long, device=self.device
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for _, _, ids in rows],
            dtype=torch.long,
            device=self.device,
        )
        # Built here and not read from the folder's generation_config.json (use_model_defaults
        # off), so a model shipped with sampling or penalties still decodes plainly greedy.
        config = GenerationConfig(
            max_new_tokens=max(request.max_new_tokens for _, request, _ in rows),
            do_sample=False,
            num_beams=1,
            eos_token_id=list(self.stop_ids) or None,
            pad_token_id=pad,
        )
        kwargs: dict[str, Any] = {}  # peft routing only (adapter_names)
        # A causal LM's class mixes GenerationMixin in; load_causal_lm's PreTrainedModel does not say so.
        model: GenerationMixin | PeftModel = cast(GenerationMixin, self._base)
        if self._peft is not None:
            model = self._peft
            # Only input_ids and attention_mask go in: extra inputs (GPT-2's token_type_ids)
            # break peft's per-row adapter routing.
            kwargs["adapter_names"] = [request.adapter or BASE_ADAPTER for _, request, _ in rows]
            for name in {request.adapter for _, request, _ in rows if request.adapter is not None}:
                self._adapters.move_to_end(name)
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                use_model_defaults=False,
                **kwargs,
            )
        new_rows = []
        for (_, request, _), row in zip(rows, out[:, width:].tolist(), strict=False):
            row = row[: request.max_new_tokens]
            for n, token in enumerate(row):
                if token in self.stop_ids:  # the row ended here; what follows is padding
                    row = row[: n + 1]
                    break
            new_rows.append(row)
        return new_rows

    def _result(
        self, request: GenerationRequest, ids: list[int], new_ids: list[int], timings: dict[str, float]
    ) -> GenerationResult:
        finish = "eos" if new_ids and new_ids[-1] in self.stop_ids else "length"
        return GenerationResult(
            text=self.tokenizer.decode(new_ids, skip_special_tokens=True),
            token_ids=tuple(int(t) for t in new_ids),
            prompt_tokens=len(ids),
            finish_reason=finish,
            model_id=self.model_id,
            adapter=request.adapter,
            timings=timings,
        )


def weights_digest(model_dir: Path) -> str:
    """sha256 over the names and contents of a model folder's weight files, in name order."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin"))
    if not files:
        raise ModelFolderError(f"{model_dir} holds no .safetensors or .bin weight files")
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + b"\0" + file_sha256(path))
    return h.hexdigest()


def _stop_ids(model: torch.nn.Module, tokenizer: object) -> frozenset[int]:
    """The tokens that end a generation: the model's own eos ids (its generation config, then its
    config) and the tokenizer's. A converted GGUF can name another token as the tokenizer's eos
    than the model emits at the end of a turn (SmolLM2: <|im_start|> against <|im_end|>)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None)
        ids.update([value] if isinstance(value, int) else (value or []))
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.add(eos)
    return frozenset(ids)


def _context_length(config: object) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelFolderError(
        "cannot tell the model's context length: its config.json has no n_positions or max_position_embeddings"
    )
