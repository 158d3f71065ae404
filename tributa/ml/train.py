"""Deterministic training of the demo GPT-2 base model and of one LoRA adapter per dataset.

Determinism is bitwise on one machine: fixed seeds, `torch.use_deterministic_algorithms(True)`,
a fixed thread count, no dropout, and batches drawn from a seeded generator in a fixed order.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BaseTrainConfig:
    """Shape and schedule of the base model; every field is part of the model cache key."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 256
    block_size: int = 64
    batch_size: int = 16
    steps: int = 500
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    seed: int = 1234
    threads: int = 1
    log_every: int = 100


@dataclass(frozen=True)
class AdapterTrainConfig:
    """LoRA rank, targets and schedule of each dataset adapter; part of the model cache key."""

    r: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")
    block_size: int = 64
    batch_size: int = 8
    steps: int = 80
    learning_rate: float = 5e-3
    warmup_steps: int = 10
    seed: int = 4321
    threads: int = 1
    log_every: int = 40


@dataclass(frozen=True)
class TrainStats:
    """What one training run measured."""

    steps: int
    final_loss: float
    seconds: float
    trainable_params: int


@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Pin torch to bitwise-reproducible kernels and `threads` CPU threads, restoring both after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)


def encode_corpus(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> torch.Tensor:
    """Token ids of `texts` in order, each followed by <|endoftext|>, as one 1-D long tensor."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token; train it with <|endoftext|> as special")
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _batches(tokens: torch.Tensor, block_size: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """`steps` batches of random windows of `block_size + 1` tokens, from a seeded generator."""
    span = block_size + 1
    if tokens.numel() < span + 1:
        raise ValueError(f"corpus has {tokens.numel()} tokens; need more than {span} for block_size={block_size}")
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(span)
    for _ in range(steps):
        starts = torch.randint(0, tokens.numel() - span + 1, (batch_size,), generator=gen)
        yield tokens[starts[:, None] + offsets[None, :]]


def _lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def _train_loop(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    *,
    block_size: int,
    batch_size: int,
    steps: int,
    learning_rate: float,
    warmup_steps: int,
    weight_decay: float,
    seed: int,
    log_every: int,
    label: str,
    progress: Progress,
) -> TrainStats:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params,
        lr=learning_rate,
        betas=(0.9, 0.95),
        weight_decay=weight_decay,
        foreach=False,
        fused=False,
    )
    model.train()
    started = time.perf_counter()
    loss_value = float("nan")
    for step, batch in enumerate(_batches(tokens, block_size, batch_size, steps, seed)):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, learning_rate, warmup_steps)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_value = float(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            progress(f"[{label}] step {step + 1}/{steps} loss {loss_value:.3f} ({time.perf_counter() - started:.1f}s)")
    model.eval()
    return TrainStats(
        steps=steps,
        final_loss=loss_value,
        seconds=time.perf_counter() - started,
        trainable_params=sum(p.numel() for p in params),
    )


def build_base_model(config: BaseTrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 of `config`'s shape, seeded so its init is reproducible."""
    torch.manual_seed(config.seed)
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        # No dropout: the model is meant to fit the tiny corpora, and it keeps training exact.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(gpt2)
    model.config.name_or_path = "tributa-demo-base"
    return model


def train_base_model(
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    config: BaseTrainConfig = BaseTrainConfig(),
    progress: Progress = print,
) -> tuple[GPT2LMHeadModel, TrainStats]:
    """Train the base model from scratch on `texts` (in order); same inputs -> same weights."""
    with deterministic_torch(config.threads):
        tokens = encode_corpus(tokenizer, texts)
        model = build_base_model(config, tokenizer)
        progress(
            f"[base] training {sum(p.numel() for p in model.parameters()):,} params on "
            f"{tokens.numel():,} tokens for {config.steps} steps"
        )
        stats = _train_loop(
            model,
            tokens,
            block_size=config.block_size,
            batch_size=config.batch_size,
            steps=config.steps,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            seed=config.seed,
            log_every=config.log_every,
            label="base",
            progress=progress,
        )
    return model, stats


def lora_config(config: AdapterTrainConfig, fan_in_fan_out: bool = True) -> LoraConfig:
    """The peft LoRA config of a dataset adapter. fan_in_fan_out: GPT-2's Conv1D stores weights
    transposed (in x out); Llama's nn.Linear projections (out x in) take False."""
    return LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        target_modules=list(config.target_modules),
        lora_dropout=0.0,
        bias="none",
        fan_in_fan_out=fan_in_fan_out,
        task_type="CAUSAL_LM",
    )


def train_adapter(
    base: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    name: str,
    config: AdapterTrainConfig = AdapterTrainConfig(),
    progress: Progress = print,
    lora: LoraConfig | None = None,
    label: str | None = None,
) -> tuple[PeftModel, TrainStats]:
    """Train a LoRA adapter named `name` on `texts` over a frozen `base` (`lora`: default the
    GPT-2 layout of `lora_config(config)`).

    peft injects LoRA layers into `base` in place; call `.unload()` on the result to get the
    untouched base back before training the next adapter.
    """
    label = label or f"adapter {name}"
    with deterministic_torch(config.threads):
        tokens = encode_corpus(tokenizer, texts)
        torch.manual_seed(config.seed)  # LoRA A matrices are initialised from the global RNG
        model = get_peft_model(base, lora or lora_config(config), adapter_name=name)
        progress(
            f"[{label}] training {sum(p.numel() for p in model.parameters() if p.requires_grad):,} "
            f"LoRA params on {tokens.numel():,} tokens for {config.steps} steps"
        )
        stats = _train_loop(
            model,
            tokens,
            block_size=config.block_size,
            batch_size=config.batch_size,
            steps=config.steps,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_steps,
            weight_decay=0.0,
            seed=config.seed,
            log_every=config.log_every,
            label=label,
            progress=progress,
        )
    return model, stats


def state_dict_digest(model: torch.nn.Module, trainable_only: bool = False) -> str:
    """sha256 over the names, dtypes, shapes and raw bytes of a model's tensors, in name order."""
    h = hashlib.sha256()
    named = dict(model.named_parameters()) if trainable_only else model.state_dict()
    for key in sorted(named):
        t = named[key]
        if trainable_only and not t.requires_grad:
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
