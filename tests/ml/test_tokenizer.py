"""The demo tokenizer: deterministic training on the shipped corpora, cached by data + config."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tributa.ml import tokenizer as T

REPO = Path(__file__).resolve().parents[2]


def _digest(tok) -> str:
    return hashlib.sha256(tok.to_str().encode()).hexdigest()


def test_demo_datasets__shipped__three_distinct_corpora_with_readmes_under_size_budget():
    dirs = T.demo_dataset_dirs()
    assert len(dirs) >= 3
    total = 0
    for name, d in dirs.items():
        size = sum(f.stat().st_size for f in T.dataset_text_files(d))
        assert 15_000 <= size <= 80_000, f"{name} is {size} bytes"
        assert (d / "README.md").is_file(), f"{name} has no README.md"
        total += size
    assert total < 400_000


def test_train_tokenizer__twice_on_shipped_data__identical_vocab_and_merges():
    files = T.corpus_files()
    first, second = T.train_tokenizer(files), T.train_tokenizer(files)
    assert first.get_vocab() == second.get_vocab()
    assert first.to_str() == second.to_str()  # includes the ordered merge list


def test_train_tokenizer__in_two_fresh_processes__identical_output():
    # A fresh process has fresh hash seeds (Python and Rust): the result must not depend on them.
    code = (
        "import hashlib; from tributa.ml import tokenizer as T; "
        "print(hashlib.sha256(T.train_tokenizer(T.corpus_files()).to_str().encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert outs == {_digest(T.train_tokenizer(T.corpus_files()))}


def test_load_tokenizer__fixed_vocab_and_special_tokens(tmp_path):
    tok = T.load_tokenizer(tmp_path)
    assert len(tok) == T.DEFAULT_TOKENIZER_CONFIG.vocab_size
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 1


def test_load_tokenizer__text_from_every_dataset__round_trips_exactly(tmp_path):
    tok = T.load_tokenizer(tmp_path)
    for d in T.demo_dataset_dirs().values():
        text = T.read_dataset_text(d)[:3000]
        assert tok.decode(tok(text)["input_ids"]) == text
    unseen = "Zürich ✓ 東京 — tabs\tand\nnewlines"
    assert tok.decode(tok(unseen)["input_ids"]) == unseen  # byte-level: no unknown tokens


def test_load_tokenizer__second_call__loads_cached_folder_without_rebuilding(tmp_path):
    T.load_tokenizer(tmp_path)
    (folder,) = tmp_path.glob("tokenizer-*")
    mtime = (folder / "tokenizer.json").stat().st_mtime_ns
    T.load_tokenizer(tmp_path)
    assert [p.name for p in tmp_path.glob("tokenizer-*")] == [folder.name]
    assert (folder / "tokenizer.json").stat().st_mtime_ns == mtime


def test_load_tokenizer__cache_env_var__overrides_default_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(T.CACHE_ENV_VAR, str(tmp_path / "env-cache"))
    assert T.default_cache_dir() == (tmp_path / "env-cache").resolve()
    T.load_tokenizer()
    assert list((tmp_path / "env-cache").glob("tokenizer-*/tokenizer.json"))


def test_defaults__without_tributa_env__follow_the_current_folder_not_the_package(tmp_path, monkeypatch):
    from tributa.config import Settings

    for name in (T.CACHE_ENV_VAR, "TRIBUTA_DEPLOYMENTS", "TRIBUTA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    assert T.default_cache_dir() == tmp_path / ".cache" / "tributa"
    assert Settings().deployments_dir == tmp_path / "deployments"
    assert Settings().data_dir.resolve() == tmp_path / ".tributa"


def test_tokenizer_cache_key__changed_text_or_config__changes_key(tmp_path):
    corpus = tmp_path / "a.txt"
    corpus.write_text("the sun is a star\n" * 50)
    key = T.tokenizer_cache_key([corpus])
    assert T.tokenizer_cache_key([corpus]) == key
    corpus.write_text("the moon is not a star\n" * 50)
    assert T.tokenizer_cache_key([corpus]) != key
    bigger = T.TokenizerConfig(vocab_size=4096)
    assert T.tokenizer_cache_key([corpus], bigger) != T.tokenizer_cache_key([corpus])


def test_demo_dataset_dirs__missing_folder__says_how_to_restore(tmp_path):
    with pytest.raises(FileNotFoundError, match="restore data/datasets"):
        T.demo_dataset_dirs(tmp_path / "nope")
