"""Greedy text generation from one base model serving many LoRA adapters (OpenLoRA-style).

The base weights are loaded once; adapters are loaded beside them with peft and switched per
request with `set_adapter`, so a request for another adapter costs a pointer swap, not a reload.
Decoding is greedy only, so anyone with the same weights can re-run a request and get the same
tokens.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel
from transformers import GenerationConfig

from tributa.runtime.errors import InferenceInputError
from tributa.ml.models import ModelFolderError, file_sha256, load_causal_lm

MAX_NEW_TOKENS_LIMIT = 512
DEFAULT_MAX_ADAPTERS = 32


def default_device() -> str:
    """CUDA when present, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


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
    ) -> None:
        if max_adapters < 1:
            raise ValueError(f"max_adapters must be >= 1, got {max_adapters}")
        self.base_dir = Path(base_dir).expanduser().resolve()
        self.device = device or default_device()
        started = time.perf_counter()
        self._base, self.tokenizer = load_causal_lm(self.base_dir, self.device)
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
                raise ModelFolderError(
                    f"{path} is not a peft adapter folder (no adapter_config.json)"
                )
            self._evict_if_full()
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(
                        self._base, str(path), adapter_name=name, torch_device=self.device
                    )
                else:
                    self._peft.load_adapter(str(path), adapter_name=name, torch_device=self.device)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ModelFolderError(
                    f"adapter {path} does not fit base model {self.base_dir}: {exc}"
                ) from exc
            self._peft.eval()
            self._adapters[name] = path

    def _evict_if_full(self) -> None:
        # Drop the least recently used adapter; the base and the other adapters stay loaded.
        while self._peft is not None and len(self._adapters) >= self._max_adapters:
            victim, _ = self._adapters.popitem(last=False)
            self._peft.delete_adapter(victim)

    def count_tokens(self, prompt: str) -> int:
        """How many tokens `prompt` encodes to with this model's tokenizer."""
        with self._lock:
            return len(self.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"])

    def generate(
        self, prompt: str, adapter: str | None = None, max_new_tokens: int = 32
    ) -> GenerationResult:
        """Greedy continuation of `prompt` with `adapter` active (None: the bare base model)."""
        started = time.perf_counter()
        if not isinstance(prompt, str) or not prompt:
            raise InferenceInputError("prompt must be a non-empty string")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise InferenceInputError(
                f"max_new_tokens must be an integer, got {type(max_new_tokens).__name__}"
            )
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InferenceInputError(
                f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {max_new_tokens}"
            )
        with self._lock:  # one request at a time: the tokenizer and the active adapter are shared
            ids = self.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
            if len(ids) + max_new_tokens > self.context_length:
                raise InferenceInputError(
                    f"prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} that "
                    f"exceeds the model's context of {self.context_length} tokens: shorten the "
                    "prompt or ask for fewer new tokens"
                )
            tokenized = time.perf_counter()
            model = self._select(adapter)
            switched = time.perf_counter()
            output = self._greedy(model, ids, max_new_tokens, disable_adapters=adapter is None)
            generated = time.perf_counter()
        new_ids = tuple(int(t) for t in output[len(ids) :])
        eos = self.tokenizer.eos_token_id
        finish = "eos" if eos is not None and new_ids and new_ids[-1] == eos else "length"
        text = self.tokenizer.decode(list(new_ids), skip_special_tokens=True)
        done = time.perf_counter()
        return GenerationResult(
            text=text,
            token_ids=new_ids,
            prompt_tokens=len(ids),
            finish_reason=finish,
            model_id=self.model_id,
            adapter=adapter,
            timings={
                "tokenize_ms": (tokenized - started) * 1e3,
                "adapter_switch_ms": (switched - tokenized) * 1e3,
                "generate_ms": (generated - switched) * 1e3,
                "total_ms": (done - started) * 1e3,
            },
        )

    def _select(self, adapter: str | None) -> torch.nn.Module:
        if adapter is None:
            return self._peft if self._peft is not None else self._base
        if adapter not in self._adapters or self._peft is None:
            loaded = ", ".join(self._adapters) or "none"
            raise InferenceInputError(
                f"adapter {adapter!r} is not loaded (loaded: {loaded}); load it with "
                "load_adapter(name, folder) first"
            )
        self._adapters.move_to_end(adapter)
        self._peft.set_adapter(adapter)
        return self._peft

    def _greedy(
        self, model: torch.nn.Module, ids: list[int], max_new_tokens: int, disable_adapters: bool
    ) -> list[int]:
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        # Built here and not read from the folder's generation_config.json (use_model_defaults
        # off), so a model shipped with sampling or penalties still decodes plainly greedy.
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        with torch.inference_mode():
            if disable_adapters and isinstance(model, PeftModel):
                # The LoRA layers live inside the base modules; bypass them for a bare-base request.
                with model.disable_adapter():
                    out = model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=config,
                        use_model_defaults=False,
                    )
            else:
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                    use_model_defaults=False,
                )
        return out[0].tolist()


def weights_digest(model_dir: Path) -> str:
    """sha256 over the names and contents of a model folder's weight files, in name order."""
    files = sorted(
        p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin")
    )
    if not files:
        raise ModelFolderError(f"{model_dir} holds no .safetensors or .bin weight files")
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + b"\0" + file_sha256(path))
    return h.hexdigest()


def _context_length(config: object) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelFolderError(
        "cannot tell the model's context length: its config.json has no n_positions or "
        "max_position_embeddings"
    )
