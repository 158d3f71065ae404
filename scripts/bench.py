"""`make bench`: run every benchmark and write bench-results.json (a flat {figure: number} map).

Gas comes from real Anvil receipts; times are medians of repeated runs on this machine,
with ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time

from tributa.config import REPO_ROOT

# This file is scripts/bench.py: keep its folder off the path so `bench` is the package.
sys.path[0] = str(REPO_ROOT)

RESULTS = REPO_ROOT / "bench-results.json"
SUITES = (
    "gas_bench",
    "royalty_gas_bench",
    "imo_gas_bench",
    "ai_oracle_gas",
    "latency_bench",
    "crash_bench",
    "store_bench",
    "attribution_bench",
    "engine_bench",
    "verify_bench",
    "api_bench",
    "chaos_bench",
    "content_bench",
)


def print_table(name: str, figures: dict[str, float], seconds: float) -> None:
    print(f"\n{name} ({seconds:.0f}s)")
    width = max(len(k) for k in figures) if figures else 10
    for key, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) and not value.is_integer() else f"{int(value):,}"
        print(f"  {key:<{width}}  {shown:>16}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suites", nargs="*", default=list(SUITES), help=f"any of {', '.join(SUITES)}")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suites: {', '.join(sorted(unknown))}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    workroot = REPO_ROOT / ".tributa" / "bench"
    for name in args.suites:
        workdir = workroot / name
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        started = time.perf_counter()
        figures = importlib.import_module(f"bench.{name}").run(workdir)
        print_table(name, figures, time.perf_counter() - started)
        results.update(figures)
        RESULTS.write_text(json.dumps(dict(sorted(results.items())), indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
