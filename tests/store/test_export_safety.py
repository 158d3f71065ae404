"""Exporting, or reading the text of, a tree someone else built (red-team B9).

A registered dataset or model is a DAG from a stranger: the oracle exports and reads every
registered dataset as its own user, and `tributa store get -o` exports whatever CID it is given.
Each malicious tree below is built block by block with the store's own DAG builder, the way a
stranger can (a directory node may carry any names and symlinks, even ones no file system has).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.store.helpers import write
from tributa import datasets
from tributa.errors import TributaError
from tributa.store import dag
from tributa.store.blockstore import Blockstore
from tributa.store.cli import store as store_cli
from tributa.store.embedded import EmbeddedStore
from tributa.store.errors import ContentIntegrityError, StoreError
from tributa.store.importer import Importer
from tributa.store.layout import Link, directory_node, symlink_node


class Builder:
    """Blocks straight into the store's blockstore: any tree, valid on disk or not."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.blocks = Blockstore(store.root)

    def file(self, content: bytes) -> Link:
        return Importer(self.blocks).add_bytes(content)

    def link(self, target: str) -> Link:
        return symlink_node(os.fsencode(target), 0, self.blocks)

    def folder(self, *entries: tuple[str, Link]) -> Link:
        return directory_node([(os.fsencode(name), link) for name, link in entries], 0, self.blocks)


@pytest.fixture
def build(embedded: EmbeddedStore) -> Builder:
    return Builder(embedded)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside every export: it must never change."""
    return write(tmp_path / "outside" / "victim.txt", b"ORIGINAL\n")


def test_export__symlink_planted_at_the_temp_name__refused_and_nothing_written_through_it(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path, victim: Path
) -> None:
    # The red-team repro: `.config.json.tributa-tmp -> victim` next to `config.json`.
    tree = build.folder(
        (".config.json.tributa-tmp", build.link(str(victim))),
        ("config.json", build.file(b"WRITTEN BY THE TREE\n")),
    )
    with pytest.raises(ContentIntegrityError, match="temporary file"):
        embedded.export(tree.cid, tmp_path / "out")
    assert victim.read_bytes() == b"ORIGINAL\n"


def test_write_file_atomically__entry_already_at_the_temp_name__fails_instead_of_writing_through(
    tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Belt and braces behind the name check: the temp file is created O_EXCL|O_NOFOLLOW.
    monkeypatch.setattr(dag.secrets, "token_hex", lambda n: "fixed")
    out = tmp_path / "out"
    out.mkdir()
    (out / f".fixed{dag.TEMP_SUFFIX}").symlink_to(victim)
    folder = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileExistsError):
            dag.write_file_atomically(iter([b"PAYLOAD"]), folder, "config.json")
    finally:
        os.close(folder)
    assert victim.read_bytes() == b"ORIGINAL\n"
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("order", ["link first", "file first"])
def test_export__one_name_twice_as_a_symlink_and_a_file__refused_and_the_target_intact(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path, victim: Path, order: str
) -> None:
    entries = [("config.json", build.link(str(victim))), ("config.json", build.file(b"PAYLOAD"))]
    tree = build.folder(*(entries if order == "link first" else entries[::-1]))
    with pytest.raises(ContentIntegrityError, match="twice"):
        embedded.export(tree.cid, tmp_path / "out")
    assert victim.read_bytes() == b"ORIGINAL\n"


def test_export__folder_name_that_a_symlink_also_takes__never_descends_through_the_link(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path, victim: Path
) -> None:
    # `sub -> outside/` then a folder `sub/` holding victim.txt: writing into it would overwrite.
    tree = build.folder(
        ("sub", build.link(str(victim.parent))),
        ("sub", build.folder(("victim.txt", build.file(b"PAYLOAD")))),
    )
    with pytest.raises(StoreError):
        embedded.export(tree.cid, tmp_path / "out")
    assert victim.read_bytes() == b"ORIGINAL\n"


@pytest.mark.parametrize(
    "where, target",
    [
        ("root", "/etc/passwd"),  # absolute
        ("root", "../outside/victim.txt"),  # climbs out of the export
        ("root", ""),  # no target at all
        ("sub", "../../outside/victim.txt"),  # one '..' more than the link is deep
        ("sub", "deeper/../../../outside"),  # a '..' after a name
        ("sub", "nul\0byte"),
    ],
)
def test_export__symlink_pointing_out_of_the_tree__refused_with_its_path(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path, where: str, target: str
) -> None:
    link = ("escape", build.link(target))
    tree = build.folder(link) if where == "root" else build.folder(("sub", build.folder(link)))
    with pytest.raises(ContentIntegrityError, match="escape.*points outside the exported tree"):
        embedded.export(tree.cid, tmp_path / "out")


def test_export__two_links_that_each_stay_inside_but_chain_out__refused(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path
) -> None:
    # Lexically `b` is `./a/..` = the root; on disk it is `out/.` + `..` = out's parent.
    tree = build.folder(("a", build.link(".")), ("b", build.link("a/..")))
    with pytest.raises(ContentIntegrityError, match="points outside"):
        embedded.export(tree.cid, tmp_path / "out")
    assert not (tmp_path / "out" / "b").is_symlink()


def test_export__symlink_as_the_root__refused(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path, victim: Path
) -> None:
    with pytest.raises(ContentIntegrityError, match="points outside"):
        embedded.export(build.link(str(victim)).cid, tmp_path / "out")
    assert not (tmp_path / "out").is_symlink()


def test_export__symlinks_that_stay_inside__are_written_as_they_are(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path
) -> None:
    # What `ipfs add -r` stores for an ordinary tree still exports like `ipfs get`.
    tree = build.folder(
        ("data.txt", build.file(b"data")),
        ("latest", build.link("data.txt")),
        ("here", build.link(".")),
        ("sub", build.folder(("up", build.link("../data.txt")), ("dangling", build.link("../missing/x")))),
    )
    out = tmp_path / "out"
    embedded.export(tree.cid, out)
    assert os.readlink(out / "latest") == "data.txt" and (out / "latest").read_bytes() == b"data"
    assert os.readlink(out / "here") == "."
    assert os.readlink(out / "sub" / "up") == "../data.txt"
    assert os.readlink(out / "sub" / "dangling") == "../missing/x"
    assert sorted(os.listdir(out)) == ["data.txt", "here", "latest", "sub"], "no temp file left"
    assert embedded.cid_of(out) == tree.cid


def test_export__folders_nested_past_the_limit__refused_without_recursing(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path
) -> None:
    from tributa.store.dag import MAX_EXPORT_DEPTH

    tree = build.file(b"leaf")
    for _ in range(MAX_EXPORT_DEPTH + 2):
        tree = build.folder(("d", tree))
    with pytest.raises(ContentIntegrityError, match="nests folders"):
        embedded.export(tree.cid, tmp_path / "out")


def test_store_get_output__planted_symlink__one_line_error_and_the_target_intact(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path, victim: Path
) -> None:
    tree = build.folder(
        (".config.json.tributa-tmp", build.link(str(victim))),
        ("config.json", build.file(b"WRITTEN BY THE TREE\n")),
    )
    embedded.close()
    result = CliRunner(mix_stderr=False).invoke(
        store_cli,
        ["--data-dir", str(embedded.root.parent), "get", str(tree.cid), "-o", str(tmp_path / "out")],
        catch_exceptions=False,
    )
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "temporary file" in result.stderr
    assert victim.read_bytes() == b"ORIGINAL\n"


# -- dataset_text: what the oracle reads of every registered dataset -----------------------------


def test_dataset_text__symlinks_out_of_the_tree__never_read(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path
) -> None:
    secret = write(tmp_path / "keystore.json", b"ORACLE KEYSTORE CONTENT\n")
    tree = build.folder(
        ("a.txt", build.file(b"dataset text\n")),
        ("notes.txt", build.link(str(secret))),
        ("rel.txt", build.link("../keystore.json")),
        ("keys", build.link(str(secret.parent))),
        ("sub", build.folder(("b.txt", build.file(b"more text")), ("in.txt", build.link("../a.txt")))),
    )
    text = datasets.dataset_text(embedded, str(tree.cid))
    assert "KEYSTORE" not in text
    assert text == "dataset text\n\nmore text"  # the regular files only, in path order


def test_dataset_text__planted_temp_name__refused_and_nothing_written(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path, victim: Path
) -> None:
    tree = build.folder(
        (".a.txt.tributa-tmp", build.link(str(victim))),
        ("a.txt", build.file(b"WRITTEN BY THE TREE\n")),
    )
    with pytest.raises(ContentIntegrityError):
        datasets.dataset_text(embedded, str(tree.cid))
    assert victim.read_bytes() == b"ORIGINAL\n"


def test_dataset_text__symlink_as_the_root__reads_nothing(
    embedded: EmbeddedStore, build: Builder, tmp_path: Path
) -> None:
    secret = write(tmp_path / "keystore.json", b"ORACLE KEYSTORE CONTENT\n")
    assert datasets.dataset_text(embedded, str(build.link(str(secret)).cid)) == ""


def test_dataset_text__an_ordinary_dataset__is_the_text_registration_indexed(
    embedded: EmbeddedStore, tmp_path: Path
) -> None:
    folder = tmp_path / "dataset"
    write(folder / "b.txt", "caf\u00e9\r\nwindows lines\r\n".encode())
    write(folder / "a" / "z.txt", b"nested first: 'a' sorts before 'a.txt'\n")
    write(folder / "a.txt", b"old mac\rline\n")
    cid = embedded.put_dir(folder)
    assert datasets.dataset_text(embedded, str(cid)) == datasets.read_text(datasets.text_files(folder))
    single = embedded.put_file(folder / "b.txt")
    assert datasets.dataset_text(embedded, str(single)) == "caf\u00e9\nwindows lines\n"


def test_text_files__symlink_in_a_dataset_folder__refused_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    write(folder / "a.txt", b"text")
    secret = write(tmp_path / "keystore.json", b"SECRET")
    (folder / "notes.txt").symlink_to(secret)
    with pytest.raises(TributaError, match="notes.txt is a symlink"):
        datasets.text_files(folder)
