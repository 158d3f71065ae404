"""Embedding models are served as themselves: their own weights and pooling, never MiniLM."""

from __future__ import annotations

import json
import os
import shutil
import string
from pathlib import Path

import numpy as np
import pytest

from compute_agent.bootstrap import check_servable
from tributa.catalog import LocalModel
from tributa.errors import TributaError
from tributa.ml.embeddings import model_dir as minilm_dir
from tributa.runtime.engine import ServingEngine
from tributa.runtime.jobs import JobSpec, JobSpecError, RunnerRegistry, run_job
from tributa.runtime.worker import WorkerConfig

TEXTS = ["the dough doubled in a warm place", "the Moon keeps one face toward us", "zq"]


@pytest.fixture(scope="module")
def registry():
    return RunnerRegistry("cpu")


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory) -> Path:
    """MiniLM's encoder re-saved by sentence-transformers with CLS pooling and no Normalize: a
    different embedding model, whose reference vectors sentence-transformers itself computes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer, models

    encoder = models.Transformer(str(minilm_dir()), max_seq_length=128)
    pooling = models.Pooling(encoder.get_embedding_dimension(), pooling_mode="cls")
    folder = tmp_path_factory.mktemp("cls-minilm")
    SentenceTransformer(modules=[encoder, pooling], device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def bare_bert(tmp_path_factory) -> Path:
    """A random BertModel saved by transformers alone: no modules.json, so no known pooling."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bare-bert")
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def own_tokenizer_bert(bare_bert, tmp_path_factory) -> Path:
    """`bare_bert` given a WordPiece tokenizer of its own (letters and their ## pieces, 64 ids
    as its vocabulary) and saved by sentence-transformers with mean pooling and no Normalize:
    random weights, 32 wide, nothing of MiniLM's."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertTokenizerFast

    source = tmp_path_factory.mktemp("own-tokenizer-bert-source")
    shutil.copytree(bare_bert, source, dirs_exist_ok=True)
    pieces = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *string.ascii_lowercase,
        *(f"##{c}" for c in string.ascii_lowercase),
    ]
    pieces += list(".,!?'-0")[: 64 - len(pieces)]
    (source / "vocab.txt").write_text("\n".join(pieces) + "\n")
    BertTokenizerFast(vocab_file=str(source / "vocab.txt")).save_pretrained(source)
    encoder = models.Transformer(str(source), max_seq_length=64)
    pooling = models.Pooling(encoder.get_embedding_dimension(), pooling_mode="mean")
    folder = tmp_path_factory.mktemp("own-tokenizer-bert")
    SentenceTransformer(modules=[encoder, pooling], device="cpu").save(str(folder))
    return folder


def _embed(registry, folder: Path | None) -> dict:
    spec = JobSpec(kind="embed", model_path=str(folder) if folder else None)
    return json.loads(run_job(spec, json.dumps({"texts": TEXTS}).encode(), registry).output)


def test_run_job__other_sentence_transformers_model__served_with_its_own_pooling(registry, cls_model):
    from sentence_transformers import SentenceTransformer

    served = _embed(registry, cls_model)
    reference = SentenceTransformer(str(cls_model), device="cpu").encode(TEXTS, convert_to_numpy=True)

    assert served["model"] != "all-MiniLM-L6-v2" and len(served["model"]) == 64  # its weights' digest
    np.testing.assert_allclose(np.array(served["vectors"]), reference, atol=2e-4)
    assert not np.allclose(np.linalg.norm(reference, axis=1), 1.0)  # no Normalize module: not unit length
    minilm = _embed(registry, None)["vectors"]
    assert not np.allclose(np.array(served["vectors"]), np.array(minilm), atol=1e-2)


def test_run_job__minilm_by_its_folder__same_bytes_as_the_default(registry):
    spec_default = JobSpec(kind="embed")
    spec_folder = JobSpec(kind="embed", model_path=str(minilm_dir()))
    payload = json.dumps({"texts": TEXTS}).encode()
    assert run_job(spec_folder, payload, registry).output == run_job(spec_default, payload, registry).output


def test_run_job__folder_without_modules_json__spec_error_not_minilm(registry, bare_bert):
    with pytest.raises(JobSpecError, match="no modules.json"):
        _embed(registry, bare_bert)


def test_check_servable__bare_bert_registered_as_embedding__refused_at_start_up(bare_bert, cls_model):
    check_servable([(LocalModel(cls_model, "cid", b"d", "embed"), [])])  # a servable folder passes
    with pytest.raises(TributaError, match="cannot serve .* as an embedding model: .*no modules.json"):
        check_servable([(LocalModel(bare_bert, "cid", b"d", "embed"), [])])


def test_engine__random_bert_with_its_own_tokenizer__worker_vectors_are_sentence_transformers(
    registry, own_tokenizer_bert
):
    from sentence_transformers import SentenceTransformer

    model = LocalModel(own_tokenizer_bert, "bafy-own-bert", b"", "embed")
    payload = json.dumps({"texts": TEXTS}).encode()
    with ServingEngine(WorkerConfig("embed", None, threads=1)) as engine:
        output = engine.run(model, [], payload)
        assert engine.worker(model).pid is not None  # served by a worker process, not in this one
    served = json.loads(output)
    reference = SentenceTransformer(str(own_tokenizer_bert), device="cpu").encode(TEXTS, convert_to_numpy=True)

    assert served["dim"] == reference.shape[1] == 32
    np.testing.assert_allclose(np.array(served["vectors"]), reference, atol=2e-4)
    assert not np.allclose(np.linalg.norm(reference, axis=1), 1.0)  # mean pooling, no Normalize
    minilm = _embed(registry, None)
    assert served["model"] != minilm["model"] and minilm["dim"] == 384  # another model, not MiniLM under its name
    assert output == run_job(JobSpec(kind="embed", model_path=str(own_tokenizer_bert)), payload, registry).output
