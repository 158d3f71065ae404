"""run_job: input bytes -> canonical output bytes, and clear errors for malformed input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from tributa.ml.models import ensure_demo_models
from tributa.runtime.jobs import (
    EMBEDDING_DECIMALS,
    MAX_INPUT_BYTES,
    JobInputError,
    JobSpec,
    JobSpecError,
    RunnerRegistry,
    canonical_json,
    parse_input,
    run_job,
)


@pytest.fixture(scope="module")
def registry():
    return RunnerRegistry()


@pytest.fixture()
def gen_spec(demo_models):
    return JobSpec(kind="generate", model_path=str(demo_models.base_dir), max_new_tokens=16)


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def test_run_job__generate__canonical_json_with_digest(gen_spec, registry):
    out = run_job(gen_spec, _json({"prompt": "The Fox"}), registry)
    body = json.loads(out.output)
    assert canonical_json(body) == out.output
    assert out.sha256 == hashlib.sha256(out.output).hexdigest()
    assert set(body) == {"adapter", "finish_reason", "kind", "model", "prompt_tokens", "text", "token_ids"}
    assert body["kind"] == "generate" and body["adapter"] is None
    assert 1 <= len(body["token_ids"]) <= 16


def test_run_job__generate_same_input_twice__identical_bytes(gen_spec, registry):
    first = run_job(gen_spec, _json({"prompt": "Step one.", "max_new_tokens": 12}), registry)
    second = run_job(gen_spec, _json({"prompt": "Step one.", "max_new_tokens": 12}), registry)
    assert first.output == second.output


def test_run_job__generate_with_adapter__found_in_demo_layout_and_by_path(demo_models, registry):
    base, prompt = str(demo_models.base_dir), _json({"prompt": "The", "max_new_tokens": 8})
    by_name = run_job(JobSpec("generate", base, adapter="fables"), prompt, registry)
    fables_dir = str(demo_models.adapters["fables"])
    by_path = run_job(JobSpec("generate", base, adapter="fables", adapter_path=fables_dir), prompt, registry)
    plain = run_job(JobSpec("generate", base), prompt, registry)
    assert by_name.output == by_path.output != plain.output
    assert json.loads(by_name.output)["adapter"] == "fables"


def test_run_job__registry__loads_each_base_once(gen_spec, registry):
    run_job(gen_spec, _json({"prompt": "a"}), registry)
    assert registry.generation(ensure_demo_models().base_dir) is registry.generation(ensure_demo_models().base_dir)


def test_run_job__embed__rounded_unit_vectors_in_input_order(registry):
    texts = ["The Fox and the Grapes.", "Heat the oven to two hundred degrees.", ""]
    out = run_job(JobSpec("embed"), _json({"texts": texts}), registry)
    body = json.loads(out.output)
    assert body["dim"] == 384 and body["decimals"] == EMBEDDING_DECIMALS
    vectors = np.array(body["vectors"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-3)
    assert all(round(x, EMBEDDING_DECIMALS) == x for x in vectors.ravel())
    exact = registry.embedding().embed(texts).vectors
    assert np.abs(vectors - exact).max() <= 0.5 * 10**-EMBEDDING_DECIMALS + 1e-9


def test_run_job__embed_single_text_form__equals_first_row_of_list_form(registry):
    one = json.loads(run_job(JobSpec("embed"), _json({"text": "a star"}), registry).output)
    many = json.loads(run_job(JobSpec("embed"), _json({"texts": ["a star"]}), registry).output)
    assert one == many


def test_run_job__embed_twice__identical_bytes(registry):
    payload = _json({"texts": ["the Moon raises the tides", "simmer for twenty minutes"]})
    assert run_job(JobSpec("embed"), payload, registry).output == run_job(JobSpec("embed"), payload, registry).output


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{prompt: 1}", "not JSON"),
        (b"  [1, ", "not JSON"),
        (b"42", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        ('\ufeff{"prompt": "x"}'.encode(), "not JSON"),
        (b"", "not JSON"),
        (b'["The"]', "must be a JSON object, got an array"),
        (b'{"max_new_tokens": 4}', 'needs a "prompt"'),
        (b'{"prompt": 5}', '"prompt" must be a string'),
        (b'{"prompt": ""}', '"prompt" is empty'),
        (b'{"prompt": "x", "max_new_tokens": "4"}', "must be an integer"),
        (b'{"prompt": "x", "max_new_tokens": true}', "must be an integer"),
        (b'{"prompt": "x", "max_new_tokens": 17}', "between 1 and 16"),
        (b'{"prompt": "x", "max_new_tokens": 0}', "between 1 and 16"),
        (b'{"prompt": "x", "temperature": 0.7}', "unknown field"),
        (b'{"prompt": "x", "prompt": "y"}', "repeats the field"),
        (b'{"prompt": "x", "max_new_tokens": NaN}', "NaN"),
        (b"[" * 50_000, "nested too deeply|not JSON"),
        (b'{"prompt": "' + b"a" * MAX_INPUT_BYTES + b'"}', "the limit is 65536 bytes"),
        (_json({"prompt": "word " * 1000}), "exceeds the model's context"),
    ],
)
def test_run_job__malformed_generate_input__raises_job_input_error(gen_spec, registry, payload, message):
    with pytest.raises(JobInputError, match=message):
        run_job(gen_spec, payload, registry)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{}", 'exactly one of "texts"'),
        (b'{"text": "a", "texts": ["b"]}', 'exactly one of "texts"'),
        (b'{"texts": "a"}', '"texts" must be a list'),
        (b'{"texts": ["a", 3]}', r'"texts"\[1\] must be a string'),
        (b'{"texts": []}', "1 to 256"),
        (_json({"texts": ["a"] * 257}), "1 to 256"),
        (b'{"text": null}', '"text" must be a string, got null'),
        (b'{"prompt": "a"}', "unknown field"),
    ],
)
def test_run_job__malformed_embed_input__raises_job_input_error(registry, payload, message):
    with pytest.raises(JobInputError, match=message):
        run_job(JobSpec("embed"), payload, registry)


def test_run_job__input_not_bytes__raises_job_input_error(gen_spec, registry):
    with pytest.raises(JobInputError, match="must be bytes"):
        run_job(gen_spec, '{"prompt": "x"}', registry)  # type: ignore[arg-type]


BASE = "<demo base folder>"


@pytest.mark.parametrize(
    ("spec_kwargs", "message"),
    [
        ({"kind": "translate", "model_path": BASE}, "unknown job kind"),
        ({"kind": "generate"}, "needs model_path"),
        ({"kind": "generate", "model_path": "/nonexistent/model"}, "no config.json"),
        ({"kind": "generate", "model_path": BASE, "adapter": "../../etc"}, "adapter name"),
        ({"kind": "generate", "model_path": BASE, "adapter": "poetry"}, "'poetry' not found"),
        ({"kind": "generate", "model_path": BASE, "max_new_tokens": 0}, "spec max_new_tokens"),
    ],
)
def test_run_job__bad_spec__raises_job_spec_error(demo_models, registry, spec_kwargs, message):
    kwargs = {k: str(demo_models.base_dir) if v == BASE else v for k, v in spec_kwargs.items()}
    with pytest.raises(JobSpecError, match=message):
        run_job(JobSpec(**kwargs), _json({"prompt": "x"}), registry)


def test_executor__input_names_an_adapter__that_adapter_runs_null_runs_the_base(demo_models):
    from pathlib import Path

    from tributa.catalog import LocalModel
    from tributa.runtime.executor import Executor

    executor = Executor(RunnerRegistry("cpu"))
    base = LocalModel(Path(demo_models.base_dir), "base-cid", b"", "generate")
    first, second = (
        LocalModel(Path(demo_models.adapters[n]), f"{n}-cid", b"", "adapter") for n in sorted(demo_models.adapters)[:2]
    )

    def run(**fields) -> dict:
        return json.loads(
            executor.run(base, [first, second], _json({"prompt": "The fox", "max_new_tokens": 12, **fields}))
        )

    assert run()["adapter"] == first.cid  # no field: the first adapter, as before
    chosen = run(adapter=second.cid)
    assert chosen["adapter"] == second.cid
    assert chosen["token_ids"] != run(adapter=first.cid)["token_ids"]
    assert run(adapter=None)["adapter"] is None
    with pytest.raises(JobInputError, match="is not one of this model's adapters"):
        run(adapter="QmNotAnAdapterOfThisModel")


def test_run_job__registered_limit_above_512__served_up_to_the_models_context(demo_models, registry):
    # The registry sells up to MAX_NEW_TOKENS_CAP tokens a task; the runtime serves the same cap
    # (it once stopped at 512, so every job of a model registered above that failed as "runtime").
    from tributa.registry import MAX_NEW_TOKENS_CAP

    spec = JobSpec(kind="generate", model_path=str(demo_models.base_dir), max_new_tokens=1000)
    body = json.loads(run_job(spec, _json({"prompt": "The", "max_new_tokens": 200}), registry).output)
    assert 1 <= len(body["token_ids"]) <= 200
    with pytest.raises(JobInputError, match="context of 256 tokens"):  # the demo GPT-2's n_positions
        run_job(spec, _json({"prompt": "The", "max_new_tokens": 600}), registry)
    capped = JobSpec(kind="generate", model_path=str(demo_models.base_dir), max_new_tokens=MAX_NEW_TOKENS_CAP + 1)
    with pytest.raises(JobSpecError, match=f"from 1 to {MAX_NEW_TOKENS_CAP}"):
        run_job(capped, _json({"prompt": "x"}), registry)


@pytest.mark.parametrize("text", ["What is 2+2?", "  The capital of France is", "42 is the answer", "Ünïcode prompt"])
def test_parse_input__plain_text__is_a_prompt_as_an_oao_consumer_sends_it(text):
    assert parse_input(text.encode()) == {"prompt": text}
