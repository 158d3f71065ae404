"""GenerationRunner: one base model, many LoRA adapters, greedy and bit-for-bit repeatable."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tributa.ml import tokenizer as T
from tributa.ml.models import ModelFolderError
from tributa.runtime.errors import InferenceInputError
from tributa.runtime.generation import GenerationRunner, weights_digest

PROMPT = "The"


@pytest.fixture(scope="module")
def runner(demo_models):
    r = GenerationRunner(demo_models.base_dir)
    for name, folder in demo_models.adapters.items():
        r.load_adapter(name, folder)
    return r


def test_generate__same_prompt_twice__same_tokens(runner):
    first = runner.generate(PROMPT, adapter="cooking", max_new_tokens=20)
    second = runner.generate(PROMPT, adapter="cooking", max_new_tokens=20)
    assert first.token_ids == second.token_ids and first.text == second.text
    assert first == second  # timings are excluded from equality


def test_generate__fresh_runner_on_same_folder__same_tokens(runner, demo_models):
    other = GenerationRunner(demo_models.base_dir)
    other.load_adapter("fables", demo_models.adapters["fables"])
    for adapter in (None, "fables"):
        a = runner.generate(PROMPT, adapter=adapter, max_new_tokens=16)
        b = other.generate(PROMPT, adapter=adapter, max_new_tokens=16)
        assert a.token_ids == b.token_ids
    assert other.model_id == runner.model_id == weights_digest(demo_models.base_dir)


def test_generate__adapter_switch__changes_output_and_switching_back_restores_it(runner):
    before = runner.generate(PROMPT, adapter="astronomy", max_new_tokens=12)
    outputs = {a: runner.generate(PROMPT, adapter=a, max_new_tokens=12).token_ids for a in (None, *runner.adapters)}
    assert len(set(outputs.values())) == len(outputs), "every adapter should steer differently"
    after = runner.generate(PROMPT, adapter="astronomy", max_new_tokens=12)
    assert after.token_ids == before.token_ids == outputs["astronomy"]


def test_generate__no_adapter_after_adapters_loaded__matches_bare_base(runner, demo_models):
    bare = GenerationRunner(demo_models.base_dir)  # never had an adapter injected
    runner.generate(PROMPT, adapter="cooking", max_new_tokens=4)  # leave an adapter active
    assert (
        runner.generate("Step one.", adapter=None, max_new_tokens=20).token_ids
        == bare.generate("Step one.", adapter=None, max_new_tokens=20).token_ids
    )


def test_generate__tokens__equal_a_manual_argmax_loop(runner, demo_models):
    # What a verifier does to re-check a result: plain forward passes, argmax each step.
    bare = GenerationRunner(demo_models.base_dir)
    result = bare.generate("Heat the oven", max_new_tokens=12)
    ids = bare.tokenizer("Heat the oven", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        for _ in range(12):
            logits = bare._base(input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] == bare.tokenizer.eos_token_id:
                break
    assert list(result.token_ids) == ids[result.prompt_tokens :]


def test_generate__result__holds_only_new_tokens_text_and_timings(runner):
    result = runner.generate("Step one.", adapter="cooking", max_new_tokens=8)
    assert result.prompt_tokens == runner.count_tokens("Step one.")
    assert 1 <= len(result.token_ids) <= 8
    assert result.text == runner.tokenizer.decode(list(result.token_ids), skip_special_tokens=True)
    assert result.finish_reason in ("eos", "length") and result.adapter == "cooking"
    assert {"tokenize_ms", "generate_ms", "total_ms", "batch_size"} <= set(result.timings)


def test_generate__max_new_tokens__bounds_the_output(runner):
    assert len(runner.generate(PROMPT, max_new_tokens=3).token_ids) <= 3


def test_generate__unknown_adapter__raises_input_error_naming_loaded_ones(runner):
    with pytest.raises(InferenceInputError, match="not loaded.*astronomy"):
        runner.generate(PROMPT, adapter="poetry")


@pytest.mark.parametrize(
    ("prompt", "max_new_tokens", "message"),
    [
        ("", 8, "non-empty"),
        (None, 8, "non-empty"),
        ("hi", 0, "between 1 and"),
        ("hi", 10_000, "between 1 and"),
        ("hi", 2.5, "integer"),
        ("word " * 400, 8, "exceeds the model's context"),
    ],
)
def test_generate__bad_request__raises_input_error(runner, prompt, max_new_tokens, message):
    with pytest.raises(InferenceInputError, match=message):
        runner.generate(prompt, max_new_tokens=max_new_tokens)


def test_load_adapter__same_name_other_folder__refused(runner, demo_models):
    runner.load_adapter("cooking", demo_models.adapters["cooking"])  # same folder: no-op
    with pytest.raises(InferenceInputError, match="already loaded"):
        runner.load_adapter("cooking", demo_models.adapters["fables"])


def test_load_adapter__not_an_adapter_folder__raises_model_folder_error(runner, tmp_path):
    with pytest.raises(ModelFolderError, match="adapter_config.json"):
        runner.load_adapter("empty", tmp_path)


def test_load_adapter__over_capacity__evicts_least_recently_used(demo_models, runner):
    small = GenerationRunner(demo_models.base_dir, max_adapters=2)
    small.load_adapter("astronomy", demo_models.adapters["astronomy"])
    small.load_adapter("cooking", demo_models.adapters["cooking"])
    small.generate(PROMPT, adapter="astronomy", max_new_tokens=2)  # astronomy is now most recent
    small.load_adapter("fables", demo_models.adapters["fables"])
    assert small.adapters == ("astronomy", "fables")
    for name in small.adapters:  # the survivors still give the same tokens as the full runner
        assert (
            small.generate(PROMPT, adapter=name, max_new_tokens=12).token_ids
            == runner.generate(PROMPT, adapter=name, max_new_tokens=12).token_ids
        )


def test_runner__any_local_hf_folder__loads_by_path(tmp_path):
    tok = T.load_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    r = GenerationRunner(tmp_path)
    assert r.context_length == 64
    result = r.generate("hello", max_new_tokens=5)
    assert result == r.generate("hello", max_new_tokens=5)
    with pytest.raises(InferenceInputError, match="context of 64"):
        r.generate("hello", max_new_tokens=64)


def test_runner__folder_without_model__says_what_is_missing(tmp_path):
    with pytest.raises(ModelFolderError, match="config.json"):
        GenerationRunner(tmp_path)
