"""`tributa store …`: add, get, verify, pin, unpin, pins, gc and repair from the command line.

The data directory comes from --data-dir, else the parent command's settings (ctx.obj with a
`data_dir`, as tributa.cli passes it), else $TRIBUTA_DATA_DIR, else `.tributa`; blocks live in
<data dir>/store. --ipfs-api (or $TRIBUTA_IPFS_API) switches to a Kubo daemon.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, BinaryIO

import click
from click.core import ParameterSource

from tributa.store.base import Store
from tributa.store.embedded import EmbeddedStore
from tributa.store.errors import StoreError
from tributa.store.factory import open_store
from tributa.store.importer import tree_size

_META_KEY = "tributa.store.options"
_PROGRESS_MIN_BYTES = 8 << 20  # smaller jobs finish before a progress line would help
_PROBLEMS_SHOWN = 2  # of the records a repair skipped, named on its second line


class _StoreGroup(click.Group):
    """Turns store errors into one line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None


@click.group("store", cls=_StoreGroup)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TRIBUTA_DATA_DIR",
    default=".tributa",
    show_default=True,
    help="Data directory; the store lives in DATA_DIR/store.",
)
@click.option(
    "--ipfs-api",
    envvar="TRIBUTA_IPFS_API",
    default=None,
    help="Use the Kubo daemon at this API multiaddr (e.g. /ip4/127.0.0.1/tcp/5001).",
)
@click.pass_context
def store(ctx: click.Context, data_dir: Path, ipfs_api: str | None) -> None:
    """Content-addressed storage with the CIDs `ipfs add` gives."""
    parent_dir = _parent_setting(ctx.obj, "data_dir")
    if parent_dir is not None and ctx.get_parameter_source("data_dir") != ParameterSource.COMMANDLINE:
        data_dir = Path(parent_dir)
    if ipfs_api is None:
        ipfs_api = _parent_setting(ctx.obj, "ipfs_api")
    ctx.meta[_META_KEY] = (data_dir, ipfs_api)


def _parent_setting(obj: object, name: str) -> Any:
    """A setting the parent command put in ctx.obj (a settings object, a context holding one as
    `.settings` as tributa.cli's does, or a dict), if any."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(getattr(obj, "settings", obj), name, None)


def _open(ctx: click.Context) -> Store:
    data_dir, ipfs_api = ctx.meta[_META_KEY]
    opened = open_store(Path(data_dir) / "store", ipfs_api=ipfs_api)
    ctx.call_on_close(opened.close)
    return opened


class _ProgressLine:
    """A throttled `adding NAME: 42% (108.0/256.0 MiB)` line on stderr (none for jobs of
    fewer than `min_total` bytes)."""

    def __init__(self, label: str, min_total: int = 0) -> None:
        self._label = label
        self._min_total = min_total
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total < self._min_total or (now - self._last < 0.25 and done < total):
            return
        self._last = now
        percent = 100 * done // total if total else 100
        click.echo(
            f"\r{self._label}: {percent:3d}% ({done / 2**20:.1f}/{total / 2**20:.1f} MiB)",
            err=True,
            nl=False,
        )
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            click.echo("", err=True)


def _content_bytes(path: Path) -> int:
    return tree_size(path) if path.is_dir() else path.stat().st_size


@store.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--cid-version",
    type=click.Choice(["0", "1"]),
    default="0",
    show_default=True,
    help="1 gives CIDv1 with raw leaves, like `ipfs add --cid-version=1`.",
)
@click.option("-n", "--only-hash", is_flag=True, help="Print the CID without storing anything.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line on stderr.")
@click.pass_context
def add(ctx: click.Context, path: Path, cid_version: str, only_hash: bool, quiet: bool) -> None:
    """Add a file or a directory tree; prints its CID."""
    if not path.exists() and not path.is_symlink():
        raise StoreError(f"no such file or directory: {path}")
    target = _open(ctx)
    version = int(cid_version)
    if only_hash:
        click.echo(str(target.cid_of(path, cid_version=version)))
        return
    progress = (
        _ProgressLine(f"adding {path.name}") if not quiet and _content_bytes(path) >= _PROGRESS_MIN_BYTES else None
    )
    try:
        if path.is_dir():
            cid = target.put_dir(path, progress, cid_version=version)
        else:
            cid = target.put_file(path, progress, cid_version=version)
    finally:
        if progress is not None:
            progress.finish()
    click.echo(str(cid))


@store.command("get")
@click.argument("cid")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write here (a file, or a directory tree) instead of to stdout.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress line on stderr.")
@click.pass_context
def get(ctx: click.Context, cid: str, output: Path | None, quiet: bool) -> None:
    """Write the content of CID to stdout, or to --output."""
    target = _open(ctx)
    if output is not None:
        target.export(cid, output)
        click.echo(f"wrote {cid} to {output}", err=True)
        return
    chunks = target.get(cid)
    size = _file_size(target, cid)
    progress = _ProgressLine(f"getting {cid}") if not quiet and size >= _PROGRESS_MIN_BYTES else None
    out: BinaryIO = click.get_binary_stream("stdout")
    done = 0
    try:
        for chunk in chunks:
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, size)
    finally:
        if progress is not None:
            progress.finish()
    out.flush()


def _file_size(target: Store, cid: str) -> int:
    """The file's size as its root records it (0 when this store cannot say cheaply)."""
    read = getattr(target, "read", None)
    if read is None:
        return 0
    from tributa.store import dag
    from tributa.store.cid import coerce_cid

    root_cid = coerce_cid(cid)
    root = dag.decode(root_cid, read(root_cid))  # dag.load, with the block source's read found above
    return root.fs.filesize if root.fs is not None and root.fs.filesize is not None else len(root.block)


@store.command("verify")
@click.argument("cid")
@click.pass_context
def verify(ctx: click.Context, cid: str) -> None:
    """Re-hash every block of CID."""
    report = _open(ctx).verify(cid)
    click.echo(f"ok {report.cid}: {report.blocks} blocks, {report.bytes} bytes re-hashed")


@store.command("pin")
@click.argument("cid")
@click.pass_context
def pin(ctx: click.Context, cid: str) -> None:
    """Keep CID (and everything under it) through gc."""
    _open(ctx).pin(cid)
    click.echo(f"pinned {cid}")


@store.command("unpin")
@click.argument("cid")
@click.pass_context
def unpin(ctx: click.Context, cid: str) -> None:
    """Let gc remove CID unless another pin reaches it."""
    _open(ctx).unpin(cid)
    click.echo(f"unpinned {cid}")


@store.command("pins")
@click.pass_context
def pins(ctx: click.Context) -> None:
    """List pinned CIDs."""
    for root in _open(ctx).pins():
        click.echo(str(root))


@store.command("gc")
@click.pass_context
def gc(ctx: click.Context) -> None:
    """Delete every block no pin reaches."""
    stats = _open(ctx).gc()
    click.echo(f"removed {stats.removed_blocks} blocks ({stats.removed_bytes} bytes), kept {stats.kept_blocks}")


@store.command("repair")
@click.pass_context
def repair(ctx: click.Context) -> None:
    """Rebuild the block index from the pack files (after it was lost or damaged)."""
    data_dir, ipfs_api = ctx.meta[_META_KEY]
    if ipfs_api:
        raise StoreError(
            "repair rebuilds the embedded store's index; a Kubo daemon keeps its own (check it with `ipfs repo verify`)"
        )
    # Opened without its own check: that would rebuild a missing index a first time.
    target = EmbeddedStore(Path(data_dir) / "store", check_index=False)
    ctx.call_on_close(target.close)
    progress = _ProgressLine("scanning packs", min_total=_PROGRESS_MIN_BYTES)
    try:
        report = target.rebuild_index(progress)
    finally:
        progress.finish()
    click.echo(report.summary())
    if report.problems:
        named = "; ".join(report.problems[:_PROBLEMS_SHOWN])
        more = len(report.problems) - _PROBLEMS_SHOWN
        click.echo(
            f"not indexed: {named}{f' (and {more} more)' if more > 0 else ''}; content that now "
            "reads as missing or incomplete is repaired by adding it again"
        )


def main() -> None:
    """Run the group on its own (`python -m tributa.store.cli`)."""
    store(prog_name="tributa store")


if __name__ == "__main__":
    main()
