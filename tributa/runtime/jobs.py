"""`run_job`: the one entry point from a job's input bytes to its canonical output bytes.

Input (UTF-8 JSON, at most MAX_INPUT_BYTES):
    generate: {"prompt": "...", "max_new_tokens": 32, "adapter": "<CID>", "chat": false}
              (max_new_tokens optional, <= the spec's; adapter optional: one of the model's
              adapters by CID, null for the bare base, absent for the first, the executor reads
              it; chat optional: wrap the prompt in the tokenizer's chat template as one user
              turn. Without it the prompt is tokenized as plain transformers does, BOS included
              where the tokenizer adds one)
    embed:    {"texts": ["...", ...]}  or  {"text": "..."}

Output is canonical JSON (sorted keys, compact separators, UTF-8) so two agents that ran the same
job on the same weights produce byte-identical output and the same sha256:
    generate: {"adapter", "finish_reason", "kind", "model", "prompt_tokens", "text", "token_ids"}
    embed:    {"decimals", "dim", "kind", "model", "vectors"}   (vectors rounded to
              EMBEDDING_DECIMALS places: equal on one platform; across CPU/GPU, compare within
              10**-EMBEDDING_DECIMALS rather than by hash, as a value may round the other way)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tributa.errors import TributaError
from tributa.json_input import depth_ok
from tributa.ml.models import ModelFolderError
from tributa.runtime.embedding import EmbeddingRunner
from tributa.runtime.errors import InferenceInputError
from tributa.runtime.generation import (
    MAX_NEW_TOKENS_LIMIT,
    GenerationRequest,
    GenerationResult,
    GenerationRunner,
    default_device,
)

MAX_INPUT_BYTES = 64 * 1024
MAX_INPUT_DEPTH = 64  # a task's input nests 2 levels
EMBEDDING_DECIMALS = 4
KINDS = ("generate", "embed")
GENERATE_FIELDS = ("prompt", "max_new_tokens", "adapter", "chat")
EMBED_FIELDS = ("texts", "text")
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class JobNotRunnable(TributaError, ValueError):
    """A job that cannot run; nothing was computed."""


class JobInputError(JobNotRunnable):
    """The job's input bytes are malformed; the message says what to fix."""


class JobSpecError(JobNotRunnable):
    """The job's spec (kind, model, adapter) is wrong or names files this agent does not have."""


@dataclass(frozen=True)
class JobSpec:
    """What to run: the task kind, the model, and the limits the requester paid for.

    `model_path` is the base model folder: a causal LM for "generate", a sentence-transformers
    folder for "embed" (None there: the shipped MiniLM). `adapter` names a LoRA adapter; its folder is `adapter_path` when given,
    else `<model_path>/../adapters/<adapter>` (the layout of the demo model cache).
    """

    kind: str
    model_path: str | None = None
    adapter: str | None = None
    adapter_path: str | None = None
    max_new_tokens: int = 32


@dataclass(frozen=True)
class JobOutput:
    """Canonical output bytes and their sha256, plus what ran and how long it took."""

    output: bytes
    sha256: str
    kind: str
    model_id: str
    adapter: str | None
    timings: dict[str, float] = field(compare=False)


class RunnerRegistry:
    """Loaded runners of this process, keyed by model folder and device, reused across jobs."""

    def __init__(self, device: str | None = None, dtype: str | None = None) -> None:
        self.device = device or default_device()
        self.dtype = dtype  # generation weights' dtype (None: the device's default)
        self._generation: dict[Path, GenerationRunner] = {}
        self._embedding: dict[Path | None, EmbeddingRunner] = {}
        self._lock = threading.Lock()

    def generation(self, base_dir: Path) -> GenerationRunner:
        key = base_dir.resolve()
        with self._lock:
            runner = self._generation.get(key)
            if runner is None:
                runner = GenerationRunner(key, device=self.device, dtype=self.dtype)
                self._generation[key] = runner
            return runner

    def embedding(self, folder: Path | None = None) -> EmbeddingRunner:
        """The runner for a sentence-transformers folder (None: the shipped MiniLM)."""
        key = folder.resolve() if folder is not None else None
        with self._lock:
            runner = self._embedding.get(key)
            if runner is None:
                runner = self._embedding[key] = EmbeddingRunner(device=self.device, folder=key)
            return runner


_DEFAULT_REGISTRY: RunnerRegistry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_registry() -> RunnerRegistry:
    """The process-wide registry `run_job` uses unless given one (models stay loaded)."""
    global _DEFAULT_REGISTRY
    with _DEFAULT_LOCK:
        if _DEFAULT_REGISTRY is None:
            _DEFAULT_REGISTRY = RunnerRegistry()
        return _DEFAULT_REGISTRY


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: equal values give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def run_job(spec: JobSpec, input_bytes: bytes, registry: RunnerRegistry | None = None) -> JobOutput:
    """Run one job. Raises JobInputError for bad input bytes, JobSpecError for a bad spec."""
    return run_payload(spec, parse_input(input_bytes), registry)


def run_payload(spec: JobSpec, payload: dict[str, Any], registry: RunnerRegistry | None = None) -> JobOutput:
    """`run_job` on input already parsed by `parse_input` (the executor reads its adapter field)."""
    if spec.kind not in KINDS:
        raise JobSpecError(f"unknown job kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
    registry = registry or default_registry()
    if spec.kind == "generate":
        return _run_generate(spec, payload, registry)
    return _run_embed(spec, payload, registry)


def parse_input(input_bytes: bytes) -> dict[str, Any]:
    """Input bytes -> JSON object, or JobInputError saying what is wrong with them. Text that
    is not JSON and does not start with `{` or `[` is a plain prompt: {"prompt": text}."""
    if not isinstance(input_bytes, (bytes, bytearray, memoryview)):
        raise JobInputError(f"input must be bytes, got {type(input_bytes).__name__}")
    data = bytes(input_bytes)
    if len(data) > MAX_INPUT_BYTES:
        raise JobInputError(f"input is {len(data)} bytes; the limit is {MAX_INPUT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobInputError(f"input is not UTF-8 (bad byte at offset {exc.start})") from exc
    if not depth_ok(data, MAX_INPUT_DEPTH):  # before any parse: deep nesting crashes the parser (json_input)
        raise JobInputError(f"input JSON is nested too deeply (more than {MAX_INPUT_DEPTH} levels)")
    head = text.lstrip("\ufeff \t\r\n")[:1]
    if head and head not in "{[" and not _is_json(text):
        # Plain text is a prompt: what a contract written for ORA's OAO sends (AIOracle requests).
        return {"prompt": text}
    try:
        payload = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_nan)
    except json.JSONDecodeError as exc:
        raise JobInputError(f"input is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(payload, dict):
        raise JobInputError(f"input must be a JSON object, got {_json_type(payload)}")
    return payload


def _is_json(text: str) -> bool:
    """Whether `text` is a JSON value (a number, string, true, false or null here): those stay
    errors ("must be a JSON object") rather than prompts."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JobInputError(f"input repeats the field {key!r}; give each field once")
        out[key] = value
    return out


def _no_nan(name: str) -> Any:
    raise JobInputError(f"input holds {name}, which is not valid JSON")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _check_fields(payload: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise JobInputError(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")


def _run_generate(spec: JobSpec, payload: dict[str, Any], registry: RunnerRegistry) -> JobOutput:
    request = generation_request(spec, payload)
    model_dir = _spec_model_dir(spec)
    try:
        runner = registry.generation(model_dir)
    except (OSError, ValueError) as exc:  # ModelFolderError is an OSError
        raise JobSpecError(f"cannot load the model at {model_dir}: {exc}") from exc
    if spec.adapter is not None:
        try:
            runner.load_adapter(spec.adapter, _spec_adapter_dir(spec))
        except (ModelFolderError, InferenceInputError) as exc:
            raise JobSpecError(str(exc)) from exc
    result = runner.generate_batch([request])[0]
    if isinstance(result, InferenceInputError):
        raise JobInputError(str(result)) from result
    return generation_output(result)


def generation_request(spec: JobSpec, payload: dict[str, Any]) -> GenerationRequest:
    """A generation job's parsed input, checked against its spec, as the runner's request."""
    _check_fields(payload, GENERATE_FIELDS)
    if "prompt" not in payload:
        raise JobInputError('generation input needs a "prompt" string')
    prompt = payload["prompt"]
    if not isinstance(prompt, str):
        raise JobInputError(f'"prompt" must be a string, got {_json_type(prompt)}')
    if not prompt:
        raise JobInputError('"prompt" is empty; give at least one character')
    limit = _spec_max_new_tokens(spec)
    max_new = payload.get("max_new_tokens", limit)
    if isinstance(max_new, bool) or not isinstance(max_new, int):
        raise JobInputError(f'"max_new_tokens" must be an integer, got {_json_type(max_new)}')
    if not 1 <= max_new <= limit:
        raise JobInputError(f'"max_new_tokens" must be between 1 and {limit}, got {max_new}')
    chat = payload.get("chat", False)
    if not isinstance(chat, bool):
        raise JobInputError(f'"chat" must be true or false, got {_json_type(chat)}')
    return GenerationRequest(prompt, spec.adapter, max_new, chat)


def generation_output(result: GenerationResult) -> JobOutput:
    """A generation's canonical output bytes (equal on every agent that ran the same tokens)."""
    output = canonical_json(
        {
            "kind": "generate",
            # A digest of the weights, not a path: agents keep models in different places.
            "model": result.model_id,
            "adapter": result.adapter,
            "prompt_tokens": result.prompt_tokens,
            "text": result.text,
            "token_ids": list(result.token_ids),
            "finish_reason": result.finish_reason,
        }
    )
    return JobOutput(
        output=output,
        sha256=hashlib.sha256(output).hexdigest(),
        kind="generate",
        model_id=result.model_id,
        adapter=result.adapter,
        timings=result.timings,
    )


def _spec_max_new_tokens(spec: JobSpec) -> int:
    limit = spec.max_new_tokens
    valid = isinstance(limit, int) and not isinstance(limit, bool)
    if not valid or not 1 <= limit <= MAX_NEW_TOKENS_LIMIT:
        raise JobSpecError(f"spec max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS_LIMIT}, got {limit!r}")
    return limit


def _spec_model_dir(spec: JobSpec) -> Path:
    if not spec.model_path:
        raise JobSpecError("a generate job needs model_path: the base model folder")
    path = Path(os.fspath(spec.model_path)).expanduser()
    if not (path / "config.json").is_file():
        raise JobSpecError(
            f"model_path {path} is not a Hugging Face model folder (no config.json); fetch the model first"
        )
    return path


def _spec_adapter_dir(spec: JobSpec) -> Path:
    name = spec.adapter or ""
    if not _ADAPTER_NAME.match(name):
        raise JobSpecError(f"adapter name {name!r} is invalid: use 1-64 letters, digits, '_', '.', '-'")
    if spec.adapter_path:
        path = Path(os.fspath(spec.adapter_path)).expanduser()
    else:
        path = Path(os.fspath(spec.model_path or "")).expanduser().parent / "adapters" / name
    if not (path / "adapter_config.json").is_file():
        raise JobSpecError(
            f"adapter {name!r} not found at {path} (no adapter_config.json); fetch it or set adapter_path"
        )
    return path


def _run_embed(spec: JobSpec, payload: dict[str, Any], registry: RunnerRegistry) -> JobOutput:
    texts = embedding_texts(payload)
    folder = Path(os.fspath(spec.model_path)).expanduser() if spec.model_path else None
    try:
        runner = registry.embedding(folder)
    except (OSError, ValueError) as exc:  # EmbeddingFolderError is an OSError
        raise JobSpecError(f"cannot load the embedding model at {folder}: {exc}") from exc
    try:
        result = runner.embed(texts)
    except InferenceInputError as exc:
        raise JobInputError(str(exc)) from exc
    return embedding_output(result.model_id, result.dim, result.vectors.tolist(), result.timings)


def embedding_texts(payload: dict[str, Any]) -> list[str]:
    """An embedding job's parsed input as its list of texts."""
    _check_fields(payload, EMBED_FIELDS)
    if ("texts" in payload) == ("text" in payload):
        raise JobInputError('embedding input needs exactly one of "texts" (a list) or "text"')
    if "text" in payload:
        if not isinstance(payload["text"], str):
            raise JobInputError(f'"text" must be a string, got {_json_type(payload["text"])}')
        return [payload["text"]]
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise JobInputError(f'"texts" must be a list of strings, got {_json_type(texts)}')
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise JobInputError(f'"texts"[{i}] must be a string, got {_json_type(text)}')
    return texts


def embedding_output(model_id: str, dim: int, vectors: list[list[float]], timings: dict[str, float]) -> JobOutput:
    """An embedding's canonical output bytes: vectors rounded to EMBEDDING_DECIMALS places."""
    output = canonical_json(
        {
            "kind": "embed",
            "model": model_id,
            "dim": dim,
            "decimals": EMBEDDING_DECIMALS,
            "vectors": [[_round(x) for x in row] for row in vectors],
        }
    )
    return JobOutput(
        output=output,
        sha256=hashlib.sha256(output).hexdigest(),
        kind="embed",
        model_id=model_id,
        adapter=None,
        timings=timings,
    )


def _round(x: float) -> float:
    if not math.isfinite(x):
        raise JobNotRunnable("the embedder returned a non-finite value; the model files may be corrupt")
    r = round(x, EMBEDDING_DECIMALS)
    return 0.0 if r == 0 else r  # no "-0.0": it would hash differently from "0.0"
