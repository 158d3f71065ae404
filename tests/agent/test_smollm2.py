"""A real pretrained model offline: SmolLM2-135M-Instruct from its GGUF, converted once, served by
the same generation runner as every causal LM."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tributa.cli import cli
from tributa.ml.gguf_models import convert_gguf, ensure_smollm2
from tributa.ml.models import ModelFolderError
from tributa.runtime.generation import GenerationRunner


@pytest.fixture(scope="module")
def smollm2():
    return ensure_smollm2(progress=lambda message: None)


def test_ensure_smollm2__converted_folder__a_134m_llama_that_knows_paris(smollm2):
    runner = GenerationRunner(smollm2, device="cpu")
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
