"""The embedding loader: the shipped all-MiniLM-L6-v2 weights, sentence-transformers' recipe."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tributa.ml.embeddings import MODEL_ID, load_embedder, model_dir

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone performs a song on an acoustic guitar in front of an audience.",
    "The central bank raised interest rates by half a percentage point.",
    "Bees collect nectar from flowers and turn it into honey.",
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("cpu")


def test_encode__sentences__returns_unit_float32_rows_of_dim_384(embedder):
    vectors = embedder.encode(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    assert embedder.dim == 384 and embedder.model_id == MODEL_ID == "all-MiniLM-L6-v2"
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_encode__paraphrase_pair__scores_above_unrelated_pair(embedder):
    v = embedder.encode(SENTENCES)
    paraphrase = float(v[0] @ v[1])
    unrelated = float(v[0] @ v[2])
    assert paraphrase > 0.5 > unrelated + 0.3


def test_encode__same_folder__matches_sentence_transformers_within_1e_5(embedder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(
        [*SENTENCES, "word " * 400],
        convert_to_numpy=True,  # long text: both truncate at 256
    )
    ours = embedder.encode([*SENTENCES, "word " * 400])
    assert np.abs(ours - reference).max() < 1e-5


def test_encode__same_input_twice__is_bitwise_identical_on_cpu(embedder):
    assert embedder.encode(SENTENCES).tobytes() == embedder.encode(SENTENCES).tobytes()


def test_encode__batch_size_one_or_many__agree_within_1e_5(embedder):
    together = embedder.encode(SENTENCES, batch_size=32)
    alone = embedder.encode(SENTENCES, batch_size=1)
    assert np.abs(together - alone).max() < 1e-5


def test_load_embedder__same_device_twice__returns_the_cached_instance():
    assert load_embedder("cpu") is load_embedder("cpu")


def test_encode__empty_list__returns_empty_matrix(embedder):
    assert embedder.encode([]).shape == (0, 384)


def test_encode__bare_string__raises_type_error_that_says_to_wrap_it(embedder):
    with pytest.raises(TypeError, match=r"\[text\]"):
        embedder.encode("a single sentence")


def test_encode__batch_size_zero__raises_value_error(embedder):
    with pytest.raises(ValueError, match="batch_size"):
        embedder.encode(SENTENCES, batch_size=0)
