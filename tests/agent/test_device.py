"""`tributa agent run --device`: the agent runs, and registers, only the device it really uses."""

from __future__ import annotations

import pytest
import torch

from compute_agent.bootstrap import device_class, resolve_device
from compute_agent.registration import DEVICE_CPU, DEVICE_GPU
from tests.cli.test_cli_errors import assert_one_line_error, run_cli
from tributa.errors import TributaError


def test_resolve_device__cpu__accepted_and_registered_as_cpu():
    assert resolve_device("cpu") == "cpu"
    assert device_class("cpu") == DEVICE_CPU


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "cuda0", "tpu"])
def test_resolve_device__unknown_name__names_the_choices(device):
    with pytest.raises(TributaError, match="use cpu, cuda or cuda:N"):
        resolve_device(device)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks a machine without CUDA: runs on every CPU-only machine, CI included"
)
def test_resolve_device__cuda_without_a_gpu__says_to_use_cpu():
    with pytest.raises(TributaError, match="sees no CUDA device; use --device cpu"):
        resolve_device("cuda")


def test_device_class__cuda_names__gpu_class():
    assert device_class("cuda") == device_class("cuda:3") == DEVICE_GPU


def test_agent_run__bad_device__one_line_error_before_anything_is_sent(fresh_settings, contracts, chain_snapshot):
    agent = contracts.escrow.functions.agent
    from tests.helpers import signer_for

    address = signer_for(contracts, "agent").address
    before = agent(address).call()
    result = run_cli(fresh_settings, "agent", "run", "--device", "cuda:x", "--max-jobs", "0")
    assert_one_line_error(result, "unknown device 'cuda:x': use cpu, cuda or cuda:N")
    assert agent(address).call() == before
