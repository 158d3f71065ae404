"""scripts/gpu_check.sh, run here on the CPU: the same script a lent GPU machine runs."""

from __future__ import annotations

import json
import subprocess

from tributa.config import REPO_ROOT


def test_gpu_check__cpu_quick__reports_rates_memory_and_agreement(tmp_path):
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick", "--cache", str(tmp_path), "--json", str(report_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["device"] == "cpu" and report["dtype"] == "float32" and report["adapters"] == 3
    assert report["tokens_per_s_one_by_one"] > 0 and report["tokens_per_s_batch_2"] > 0
    assert report["worker_rss_mb"] > 300  # SmolLM2 in float32 is ~520 MB of weights
    assert report["agree"] and report["agree_jobs"] == report["agree_of"] == 8
    assert "identical tokens" in done.stdout


def test_gpu_check__cuda_without_a_gpu__says_so_and_exits_2(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device; run scripts/gpu_check.sh on it instead")
    done = subprocess.run(
        [str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--device", "cuda"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 2 and "sees no CUDA device" in done.stderr
