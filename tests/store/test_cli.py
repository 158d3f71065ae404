"""`tributa store …` through click's CliRunner: output, data-dir resolution, one-line errors."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from tests.store.helpers import data, overwrite_block, write
from tributa.config import Settings
from tributa.store.cli import store
from tributa.store.embedded import EmbeddedStore
from tributa.store.layout import CHUNK_SIZE


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(mix_stderr=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(runner: CliRunner, data_dir: Path, *args: str) -> Result:
    return runner.invoke(store, ["--data-dir", str(data_dir), *args], catch_exceptions=False)


def assert_one_line_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and fragment in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr + result.stdout


def test_add__prints_the_cid_and_stores_under_data_dir(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    content = data(CHUNK_SIZE + 1, seed=30)
    path = write(tmp_path / "f.bin", content)
    result = run(runner, data_dir, "add", str(path))
    assert result.exit_code == 0, result.stderr
    cid = result.stdout.strip()
    assert cid == str(EmbeddedStore(data_dir / "store").cid_of(content))
    assert EmbeddedStore(data_dir / "store").get_bytes(cid) == content


def test_add__cid_version_1__prints_a_cidv1(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "hello", b"hello world")
    result = run(runner, data_dir, "add", "--cid-version", "1", str(path))
    assert result.stdout.strip() == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_add__only_hash__stores_nothing(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "hello", b"hello world")
    result = run(runner, data_dir, "add", "-n", str(path))
    assert result.stdout.strip() == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    assert not EmbeddedStore(data_dir / "store").has(result.stdout.strip())


def test_add__large_file__shows_progress_on_stderr_only(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(9 << 20)
    result = run(runner, data_dir, "add", str(big))
    assert result.exit_code == 0
    assert "adding big.bin: 100% (9.0/9.0 MiB)" in result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("Qm")


def test_get_and_add__large_file__progress_on_stderr_bytes_on_stdout_and_quiet_silences_it(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (36 << 10))  # 9 MiB
    cid = run(runner, data_dir, "add", "--quiet", str(big))
    assert cid.stderr == "" and cid.stdout.startswith("Qm")

    got = run(runner, data_dir, "get", cid.stdout.strip())
    quiet = run(runner, data_dir, "get", "-q", cid.stdout.strip())

    assert got.stdout_bytes == big.read_bytes() == quiet.stdout_bytes
    assert "100% (9.0/9.0 MiB)" in got.stderr and quiet.stderr == ""


def test_add_directory__then_get_output__recreates_it(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    write(tmp_path / "tree" / "a.txt", b"a")
    write(tmp_path / "tree" / "sub" / "b.txt", b"b")
    cid = run(runner, data_dir, "add", str(tmp_path / "tree")).stdout.strip()
    out = tmp_path / "restored"
    result = run(runner, data_dir, "get", cid, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert (out / "sub" / "b.txt").read_bytes() == b"b"


def test_get__writes_file_bytes_to_stdout(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    content = data(2 * CHUNK_SIZE + 3, seed=31)
    cid = str(EmbeddedStore(data_dir / "store").put_bytes(content))
    result = runner.invoke(store, ["--data-dir", str(data_dir), "get", cid])
    assert result.exit_code == 0
    assert result.stdout_bytes == content


def test_verify_pin_unpin_pins_gc__report_what_they_did(runner: CliRunner, data_dir: Path) -> None:
    local = EmbeddedStore(data_dir / "store")
    cid = str(local.put_bytes(data(CHUNK_SIZE + 1, seed=32)))
    stored_bytes = local.verify(cid).bytes
    assert run(runner, data_dir, "verify", cid).stdout.startswith(f"ok {cid}: 3 blocks")
    assert run(runner, data_dir, "pins").stdout.split() == [cid]
    assert run(runner, data_dir, "unpin", cid).stdout.strip() == f"unpinned {cid}"
    assert run(runner, data_dir, "pins").stdout == ""
    assert run(runner, data_dir, "pin", cid).stdout.strip() == f"pinned {cid}"
    assert run(runner, data_dir, "unpin", cid).exit_code == 0
    gc_line = run(runner, data_dir, "gc").stdout.strip()
    assert gc_line == f"removed 3 blocks ({stored_bytes} bytes), kept 0"


def test_data_dir__comes_from_env_then_parent_settings_then_the_option(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "f", b"where does it go")
    monkeypatch.setenv("TRIBUTA_DATA_DIR", str(tmp_path / "from-env"))
    cid = runner.invoke(store, ["add", str(path)]).stdout.strip()
    assert EmbeddedStore(tmp_path / "from-env" / "store").has(cid)

    @click.group()
    @click.pass_context
    def tributa(ctx: click.Context) -> None:
        ctx.obj = Settings(data_dir=tmp_path / "from-parent")

    tributa.add_command(store)
    runner.invoke(tributa, ["store", "add", str(path)])
    assert EmbeddedStore(tmp_path / "from-parent" / "store").has(cid)
    flag_dir = tmp_path / "from-flag"
    runner.invoke(tributa, ["store", "--data-dir", str(flag_dir), "add", str(path)])
    assert EmbeddedStore(flag_dir / "store").has(cid)


def test_data_dir__of_the_top_level_tributa_command__is_the_stores(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tributa.cli import cli

    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "f", b"global option")
    top_dir = tmp_path / "top"
    result = runner.invoke(cli, ["--data-dir", str(top_dir), "store", "add", str(path)])
    assert result.exit_code == 0, result.output
    cid = result.stdout.strip()
    assert EmbeddedStore(top_dir / "store").has(cid)
    assert runner.invoke(cli, ["--data-dir", str(top_dir), "store", "pins"]).stdout.split() == [cid]
    assert not (tmp_path / ".tributa").exists()


# -- errors: one line on stderr, exit code 1, no traceback ----------------------------------------


def test_add__missing_path__is_a_one_line_error(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    assert_one_line_error(run(runner, data_dir, "add", str(tmp_path / "nope")), "no such file or directory")


@pytest.mark.parametrize("command", ["get", "verify", "pin", "unpin"])
def test_invalid_cid__is_a_one_line_error(runner: CliRunner, data_dir: Path, command: str) -> None:
    assert_one_line_error(run(runner, data_dir, command, "not-a-cid"), "invalid CID")


def test_get__unknown_cid__is_a_one_line_error(runner: CliRunner, data_dir: Path) -> None:
    result = run(runner, data_dir, "get", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    assert_one_line_error(result, "is not in the store")


def test_get__directory_without_output__says_to_pass_output(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    write(tmp_path / "tree" / "a", b"a")
    cid = run(runner, data_dir, "add", str(tmp_path / "tree")).stdout.strip()
    assert_one_line_error(run(runner, data_dir, "get", cid), "-o DIR")


def test_verify__corrupted_block__is_a_one_line_error(runner: CliRunner, data_dir: Path) -> None:
    local = EmbeddedStore(data_dir / "store")
    cid = local.put_bytes(b"will be damaged")
    overwrite_block(local, cid, 0, b"damaged")
    assert_one_line_error(run(runner, data_dir, "verify", str(cid)), "corrupted or truncated")


def test_unreachable_kubo__is_a_one_line_error(runner: CliRunner, data_dir: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "f", b"x")
    args = ["--data-dir", str(data_dir), "--ipfs-api", "/ip4/127.0.0.1/tcp/9", "add", str(path)]
    result = runner.invoke(store, args)
    assert_one_line_error(result, "no Kubo daemon reachable at /ip4/127.0.0.1/tcp/9")
