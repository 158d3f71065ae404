"""Deterministic training of the demo base model and per-dataset LoRA adapters, on the real data."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import pytest
import torch
from peft import PeftModel

from tributa.ml import tokenizer as T
from tributa.ml.models import ModelFolderError, ensure_demo_models, load_causal_lm
from tributa.ml.train import (
    AdapterTrainConfig,
    BaseTrainConfig,
    deterministic_torch,
    encode_corpus,
    state_dict_digest,
    train_adapter,
    train_base_model,
)

TINY_BASE = replace(
    BaseTrainConfig(),
    n_layer=1,
    n_head=2,
    n_embd=32,
    block_size=32,
    batch_size=4,
    steps=12,
    log_every=6,
)
TINY_ADAPTER = replace(AdapterTrainConfig(), r=2, block_size=32, batch_size=4, steps=6, log_every=3)


@pytest.fixture(scope="module")
def tokenizer():
    return T.load_tokenizer()


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return {name: T.read_dataset_text(d) for name, d in T.demo_dataset_dirs().items()}


def test_train_base_model__twice_with_same_config__identical_state_dict_digest(tokenizer, texts):
    first, _ = train_base_model(tokenizer, list(texts.values()), TINY_BASE, lambda _: None)
    second, _ = train_base_model(tokenizer, list(texts.values()), TINY_BASE, lambda _: None)
    assert state_dict_digest(first) == state_dict_digest(second)


def test_train_base_model__other_seed__different_weights(tokenizer, texts):
    a, _ = train_base_model(tokenizer, list(texts.values()), TINY_BASE, progress=lambda _: None)
    b, _ = train_base_model(tokenizer, list(texts.values()), replace(TINY_BASE, seed=7), progress=lambda _: None)
    assert state_dict_digest(a) != state_dict_digest(b)


def test_train_base_model__progress__reports_steps_and_loss(tokenizer, texts):
    lines: list[str] = []
    _, stats = train_base_model(tokenizer, list(texts.values()), TINY_BASE, progress=lines.append)
    assert any("step 6/12 loss" in line for line in lines)
    assert any("step 12/12 loss" in line for line in lines)
    assert math.isfinite(stats.final_loss) and stats.steps == 12


def test_train_adapter__twice_on_same_base__identical_adapter_weights(tokenizer, texts):
    base, _ = train_base_model(tokenizer, list(texts.values()), TINY_BASE, progress=lambda _: None)
    digests = []
    for _ in range(2):
        fresh = type(base)(base.config)
        fresh.load_state_dict(base.state_dict())
        model, _ = train_adapter(fresh, tokenizer, [texts["cooking"]], "cooking", TINY_ADAPTER, progress=lambda _: None)
        digests.append(state_dict_digest(model, trainable_only=True))
    assert digests[0] == digests[1]


def test_train_adapter__base_weights__stay_frozen(tokenizer, texts):
    base, _ = train_base_model(tokenizer, list(texts.values()), TINY_BASE, progress=lambda _: None)
    before = state_dict_digest(base)
    model, _ = train_adapter(base, tokenizer, [texts["fables"]], "fables", TINY_ADAPTER, progress=lambda _: None)
    assert state_dict_digest(model.unload()) == before


def test_deterministic_torch__on_exit__restores_threads_and_flag():
    threads, flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with deterministic_torch(1):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == flag


def test_ensure_demo_models__second_call__cache_hit_under_one_second(demo_models):
    started = time.perf_counter()
    again = ensure_demo_models(progress=lambda line: pytest.fail(f"rebuilt: {line}"))
    assert time.perf_counter() - started < 1.0
    assert again == demo_models


def test_ensure_demo_models__layout__standard_hf_and_peft_folders(demo_models):
    base = demo_models.base_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (base / name).is_file(), name
    assert set(demo_models.adapters) == set(T.demo_dataset_dirs())
    for folder in demo_models.adapters.values():
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA"
        assert (folder / "adapter_model.safetensors").is_file()


def test_ensure_demo_models__training__fits_the_corpora(demo_models):
    manifest = demo_models.manifest
    assert manifest["base"]["final_loss"] < 3.0  # from ln(2048) = 7.6 at initialisation
    assert all(a["final_loss"] < 3.0 for a in manifest["adapters"].values())


def test_demo_base__greedy_continuation__reuses_phrases_from_the_corpora(demo_models, texts):
    model, tok = load_causal_lm(demo_models.base_dir)
    corpus_words = " ".join(texts.values()).split()
    corpus_4grams = {tuple(corpus_words[i : i + 4]) for i in range(len(corpus_words) - 3)}
    for prompt in ("Step one. Heat the", "The Fox", "The Sun is"):
        ids = tok(prompt, return_tensors="pt").input_ids
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=30,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        words = tok.decode(out[0]).split()
        grams = {tuple(words[i : i + 4]) for i in range(len(words) - 3)}
        assert grams & corpus_4grams, f"no corpus 4-gram in {words}"


def _eval_loss(model, tokenizer, text: str) -> float:
    tokens = encode_corpus(tokenizer, [text])[:2049]  # 32 windows of 64 tokens are plenty
    n = (tokens.numel() - 1) // 64 * 64
    inputs = tokens[:n].view(-1, 64)
    targets = tokens[1 : n + 1].view(-1, 64)
    with torch.inference_mode():
        logits = model(input_ids=inputs).logits
    flat = logits.reshape(-1, logits.size(-1))
    return float(torch.nn.functional.cross_entropy(flat, targets.reshape(-1)))


def test_demo_adapters__each__fits_its_own_dataset_best(demo_models, texts):
    base, tok = load_causal_lm(demo_models.base_dir)
    names = list(demo_models.adapters)
    first = str(demo_models.adapters[names[0]])
    model = PeftModel.from_pretrained(base, first, adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(demo_models.adapters[name]), adapter_name=name)
    model.eval()
    for dataset in names:
        losses = {}
        for adapter in names:
            model.set_adapter(adapter)
            losses[adapter] = _eval_loss(model, tok, texts[dataset])
        assert min(losses, key=losses.get) == dataset, (dataset, losses)


def test_ensure_demo_models__tiny_config_in_fresh_cache__builds_once_then_hits(tmp_path):
    lines: list[str] = []
    built = ensure_demo_models(tmp_path, lines.append, TINY_BASE, TINY_ADAPTER)
    assert any("[base] step 12/12" in line for line in lines)
    assert built.root.parent == tmp_path and built.root.name == f"models-{built.cache_key}"
    for folder in built.adapters.values():
        # Folders are registered by content digest, so their bytes must not depend on the hash
        # seed: peft keeps target_modules in a set, the build writes them sorted.
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["target_modules"] == sorted(TINY_ADAPTER.target_modules)
    hit = ensure_demo_models(tmp_path, lambda line: pytest.fail(line), TINY_BASE, TINY_ADAPTER)
    assert hit == built
    other = ensure_demo_models(tmp_path, lambda _: None, replace(TINY_BASE, steps=13), TINY_ADAPTER)
    assert other.cache_key != built.cache_key


def test_load_causal_lm__folder_without_config__says_what_to_pass(tmp_path):
    with pytest.raises(ModelFolderError, match="no config.json"):
        load_causal_lm(tmp_path)
