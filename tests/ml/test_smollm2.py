"""A real pretrained model offline: SmolLM2-135M-Instruct from its GGUF, converted once, served by
the same generation runner as every causal LM."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tributa.catalog import LocalModel
from tributa.cli import cli
from tributa.ml.gguf_models import convert_gguf, ensure_smollm2
from tributa.ml.models import ModelFolderError
from tributa.runtime.engine import ServingEngine
from tributa.runtime.generation import GenerationRequest, GenerationRunner
from tributa.runtime.worker import WorkerConfig

PROMPTS = ("The capital of France is", "Name three colours of the rainbow.", "héllo wörld: 1+1=")
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def smollm2():
    return ensure_smollm2(progress=lambda message: None)


@pytest.fixture(scope="module")
def runner(smollm2):
    return GenerationRunner(smollm2, device="cpu")


@pytest.fixture(scope="module")
def plain(smollm2):
    """SmolLM2 as plain transformers loads it, none of this project's code in between."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32, local_files_only=True).eval()
    return AutoTokenizer.from_pretrained(str(smollm2), local_files_only=True), model


@pytest.fixture(scope="module")
def engine(smollm2):
    with ServingEngine(WorkerConfig("generate", None, threads=2)) as engine:
        yield engine, LocalModel(smollm2, "bafy-smollm2", b"", "generate")


def _plain_greedy(model, ids: list[int]) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            num_beams=1,
        )
    return out[0, len(ids) :].tolist()


def _served(engine, prompt: str, chat: bool) -> dict:
    engine, model = engine
    return json.loads(
        engine.run(model, [], json.dumps({"prompt": prompt, "max_new_tokens": NEW_TOKENS, "chat": chat}).encode())
    )


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
def test_engine__smollm2_prompt__tokenized_and_continued_as_plain_transformers(runner, plain, engine, chat):
    tokenizer, model = plain
    for prompt in PROMPTS:
        if chat:
            ids = list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True))
        else:
            ids = tokenizer(prompt).input_ids
        assert ids[0] == tokenizer.bos_token_id  # SmolLM2 adds its BOS (<|im_start|>); a chat turn opens with it
        assert runner._prompt_ids(GenerationRequest(prompt, chat=chat)) == ids  # the worker's own code
        served = _served(engine, prompt, chat)
        assert served["prompt_tokens"] == len(ids)
        assert served["token_ids"] == _plain_greedy(model, ids), prompt


def test_ensure_smollm2__converted_folder__a_134m_llama_that_knows_paris(runner):
    assert type(runner._base).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in runner._base.parameters()) == 134_515_008
    result = runner.generate("The capital of France is", max_new_tokens=3)
    assert result.text.startswith(" Paris"), result.text


def test_ensure_smollm2__second_call__cache_hit_without_converting(smollm2):
    said: list[str] = []
    assert ensure_smollm2(progress=said.append) == smollm2
    assert said == []


def test_convert_gguf__not_a_gguf_file__clear_error_and_nothing_cached(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelFolderError, match="not a GGUF model"):
        convert_gguf(bogus, tmp_path / "cache", progress=lambda m: None)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("gguf-")]


def test_model_convert_cli__neither_file_nor_flag__one_line_error():
    result = CliRunner().invoke(cli, ["model", "convert"])
    assert result.exit_code == 1 and "give either a GGUF file or --smollm2" in result.output


def test_model_convert_cli__smollm2__prints_the_cached_folder(smollm2):
    result = CliRunner().invoke(cli, ["model", "convert", "--smollm2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(smollm2)
