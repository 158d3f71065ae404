"""Content-store benchmark: add and read throughput against sha256 and Kubo, and add memory.

    .venv/bin/python -m bench.store_bench [WORKDIR]

Figures (medians over REPEATS runs; each run times every contender back to back on the same
file, and ratios are taken within a run so machine load affects both sides alike):
  store_add_mb_per_s            EmbeddedStore.put_file of a 256 MiB file into a fresh store
  store_add_vs_sha256_ratio     sha256-pass time / add time (1.0 = as fast as hashing alone);
                                the sha256 pass reads the file in 1 MiB pieces into one hasher
  store_add_vs_libkubo_ratio    libkubo `ipfs add --only-hash` time / add time (>1 = faster)
  store_cid_of_vs_sha256_ratio  the same for cid_of (hash only, nothing written)
  store_cid_of_vs_libkubo_ratio libkubo time / cid_of time: both only hash (>1 = faster)
  store_add_vs_plain_write_ratio  plain copy of the file into the store's disk / add time
                                (~1.0 means adding runs at the speed the disk takes writes)
  store_add_tmpfs_vs_sha256_ratio  the add-vs-sha256 ratio with the store on /dev/shm, i.e.
                                the code's own cost without the disk (when /dev/shm has room)
  store_get_mb_per_s            streaming the 256 MiB back with get() (every block re-hashed)
  store_add_peak_rss_mb         peak RSS above baseline while adding 1 GiB (child process)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from tributa.store.embedded import EmbeddedStore
from tributa.store.libkubo import LibKubo

MiB = 1 << 20
ADD_SIZE = 256 * MiB
RSS_SIZE = 1024 * MiB
REPEATS = 5
REPO_ROOT = Path(__file__).resolve().parent.parent


def _random_file(path: Path, size: int) -> Path:
    if path.exists() and path.stat().st_size == size:
        return path
    with open(path, "wb") as handle:
        for _ in range(size // (16 * MiB)):
            handle.write(os.urandom(16 * MiB))
        handle.write(os.urandom(size % (16 * MiB)))
    return path


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sha256_pass(path: Path) -> str:
    hasher = hashlib.sha256()
    buffer = memoryview(bytearray(MiB))
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            hasher.update(buffer[:size])
    return hasher.hexdigest()


def _plain_copy(source: Path, dest: Path) -> None:
    buffer = memoryview(bytearray(MiB))
    with open(source, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as out:
        while size := src.readinto(buffer):
            out.write(buffer[:size])


_RSS_CHILD = textwrap.dedent(
    """
    import re, sys
    from tributa.store.embedded import EmbeddedStore

    def kib(field):
        return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))

    store = EmbeddedStore(sys.argv[1])
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # restart the peak (VmHWM) from the current RSS: imports don't count
    base = kib("VmRSS")
    store.put_file(sys.argv[2])
    print((kib("VmHWM") - base) / 1024)
    """
)


def _peak_rss_mb(workdir: Path) -> float:
    big = _random_file(workdir / "rss-1GiB.bin", RSS_SIZE)
    store_dir = workdir / "rss-store"
    shutil.rmtree(store_dir, ignore_errors=True)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(store_dir), str(big)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=True,
        )
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
        big.unlink(missing_ok=True)
    return float(result.stdout.strip())


def _tmpfs_dir() -> Path | None:
    """A scratch folder on /dev/shm when it can hold a 256 MiB store, else None."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shutil.disk_usage(shm).free < 4 * ADD_SIZE:
        return None
    return Path(tempfile.mkdtemp(prefix="store-bench-", dir=shm))


def _one_run(source: Path, work: Path, kubo: LibKubo, tmpfs: Path | None) -> dict[str, float]:
    """Seconds for each contender on the same file, back to back."""
    store_dir = work / "store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = EmbeddedStore(store_dir)
    start = time.perf_counter()
    cid = store.put_file(source)
    times = {"add": time.perf_counter() - start}
    expected = kubo.cid_of(source)
    if str(cid) != expected:
        raise AssertionError(f"CID mismatch: store {cid} != kubo {expected}")
    times["sha"] = _timed(lambda: _sha256_pass(source))
    times["kubo"] = _timed(lambda: kubo.cid_of(source))
    times["cid_of"] = _timed(lambda: store.cid_of(source))
    times["copy"] = _timed(lambda: _plain_copy(source, store_dir / "plain-copy"))
    times["get"] = _timed(lambda: sum(len(chunk) for chunk in store.get(cid)))
    shutil.rmtree(store_dir, ignore_errors=True)
    if tmpfs is not None:
        in_memory = EmbeddedStore(tmpfs / "store")
        times["tmpfs_add"] = _timed(lambda: in_memory.put_file(source))
        shutil.rmtree(tmpfs / "store", ignore_errors=True)
    return times


def run(workdir: str | os.PathLike[str]) -> dict[str, float]:
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    source = _random_file(work / "add-256MiB.bin", ADD_SIZE)
    kubo = LibKubo()
    tmpfs = _tmpfs_dir()
    try:
        runs = [_one_run(source, work, kubo, tmpfs) for _ in range(REPEATS)]
    finally:
        kubo.close()
        source.unlink(missing_ok=True)
        if tmpfs is not None:
            shutil.rmtree(tmpfs, ignore_errors=True)

    def median(fn: Callable[[dict[str, float]], float]) -> float:
        return statistics.median(fn(times) for times in runs)

    mb = ADD_SIZE / MiB
    figures = {
        "store_add_mb_per_s": round(mb / median(lambda t: t["add"]), 1),
        "store_add_vs_sha256_ratio": round(median(lambda t: t["sha"] / t["add"]), 3),
        "store_add_vs_libkubo_ratio": round(median(lambda t: t["kubo"] / t["add"]), 3),
        "store_cid_of_vs_sha256_ratio": round(median(lambda t: t["sha"] / t["cid_of"]), 3),
        "store_cid_of_vs_libkubo_ratio": round(median(lambda t: t["kubo"] / t["cid_of"]), 3),
        "store_add_vs_plain_write_ratio": round(median(lambda t: t["copy"] / t["add"]), 3),
        "store_get_mb_per_s": round(mb / median(lambda t: t["get"]), 1),
        "store_add_peak_rss_mb": round(_peak_rss_mb(work), 1),
    }
    if tmpfs is not None:
        ratio = median(lambda t: t["sha"] / t["tmpfs_add"])
        figures["store_add_tmpfs_vs_sha256_ratio"] = round(ratio, 3)
    return figures


def print_table(figures: dict[str, float]) -> None:
    width = max(len(name) for name in figures)
    print(f"{'figure'.ljust(width)}  value")
    print(f"{'-' * width}  -------")
    for name, value in figures.items():
        print(f"{name.ljust(width)}  {value:g}")


def main() -> None:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="store-bench-"))
    figures = run(workdir)
    print_table(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
