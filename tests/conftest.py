"""Shared fixtures: a real Anvil node with the contracts deployed by `ape run deploy`."""

from __future__ import annotations

import os

import pytest

from tests.helpers import signer_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The fast tier (`make test-fast`, `pytest -m "not anvil"`) leaves out every test that needs a node.
# A test needs one when its fixtures include `anvil` (pytest's closure sees every fixture built on
# it) or when its module starts nodes itself. Anything unmarked that still starts Anvil in the
# fast tier fails (TRIBUTA_NO_ANVIL), so a missed mark shows up instead of slowing the tier.
NODE_FIXTURES = frozenset({"anvil"})
NODE_STARTERS = ("AnvilNode", "ape_deploy")  # module-level names of tests that start their own node


def pytest_configure(config):
    if "not anvil" in (config.option.markexpr or ""):
        os.environ["TRIBUTA_NO_ANVIL"] = "1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _needs_a_node(item):
            item.add_marker(pytest.mark.anvil)


def _needs_a_node(item) -> bool:
    if NODE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    module = getattr(item, "module", None)
    return any(hasattr(module, name) for name in NODE_STARTERS)


@pytest.fixture(scope="session")
def anvil(tmp_path_factory):
    from tributa.devnet import AnvilNode

    node = AnvilNode(log_path=tmp_path_factory.mktemp("anvil") / "anvil.log").start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def deployed(anvil, tmp_path_factory):
    """Settings for the session's node, with the contracts deployed once."""
    from tributa.devnet import ape_deploy, settings_for

    root = tmp_path_factory.mktemp("tributa")
    settings = settings_for(anvil, root / "data", root / "deployments")
    ape_deploy(anvil.rpc_url, settings.deployments_dir)
    return settings


@pytest.fixture(scope="session")
def contracts(deployed):
    from tributa.chain.contracts import load_contracts

    return load_contracts(deployed)


@pytest.fixture(scope="session")
def demo_models():
    """The tiny GPT-2 base and its three LoRA adapters (built once, cached under .cache/tributa)."""
    from tributa.ml.models import ensure_demo_models

    return ensure_demo_models(progress=lambda msg: None)


@pytest.fixture
def chain_snapshot(contracts):
    """Revert the chain to where it was after the test (evm_snapshot/evm_revert)."""
    w3 = contracts.w3
    snap = w3.provider.make_request("evm_snapshot", [])["result"]
    yield
    w3.provider.make_request("evm_revert", [snap])


@pytest.fixture
def signers(contracts):
    roles = (
        "deployer",
        "oracle",
        "agent",
        "agent2",
        "requester",
        "creator",
        "publisher",
        "buyer",
        "buyer2",
        "treasury",
    )
    return {role: signer_for(contracts, role) for role in roles}


@pytest.fixture
def fresh_settings(deployed, tmp_path):
    """The session's chain with a fresh, empty data directory (store + oracle DB)."""
    return deployed.with_overrides(data_dir=tmp_path / "data")


@pytest.fixture(autouse=True)
def _logging_restored():
    """`tributa agent run` / `oracle run` invoked in-process call setup_logging, which stops the
    tributa loggers propagating; caplog in every later test would then see nothing."""
    import logging

    from tributa.logs import UVICORN_LOGGERS

    loggers = [logging.getLogger(name) for name in ("tributa", *UVICORN_LOGGERS)]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    yield
    for lg, (handlers, propagate, level) in zip(loggers, saved, strict=False):
        lg.handlers[:], lg.propagate = handlers, propagate
        lg.setLevel(level)
