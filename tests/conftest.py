"""Shared fixtures: a real Anvil node with the contracts deployed by `ape run deploy`."""

from __future__ import annotations

import os

import pytest

from tests.helpers import signer_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Two markers are set from what a test uses, never by hand alone:
# - `anvil`: its fixtures include `anvil` (pytest's closure sees every fixture built on it), or its
#   module holds one of the functions that start nodes themselves;
# - `slow`: it or a fixture it uses (or a helper of theirs in the same module) loads a real model or
#   starts sandboxed serving workers, or it is a hypothesis state machine (a long chain run). A
#   module whose cost hides in a subprocess says so itself (`pytestmark = pytest.mark.slow`).
# The fast tier (`make test-fast`: -m "not anvil and not slow") leaves both out. A test that starts
# Anvil there anyway fails (TRIBUTA_NO_ANVIL), so a missed mark shows up instead of slowing the tier.
NODE_FIXTURES = frozenset({"anvil"})
NODE_STARTERS = (
    ("tributa.devnet", "AnvilNode"),
    ("tributa.devnet", "ape_deploy"),
    ("bench.chain", "deployed_chain"),
    ("bench.network", "local_network"),
    ("bench.chaos_bench", "stateful_network"),
    ("bench.crash_bench", "run_crash"),
)
HEAVY_CALLS = frozenset(
    {
        "ensure_demo_models",
        "ensure_smollm2",
        "ensure_smollm2_demo",
        "GenerationRunner",
        "EmbeddingRunner",
        "ServingEngine",
        "SandboxedExecutor",
        "generation_outputs",
        "embedding_outputs",
        "rescore_claim",
        "committee_answer",
        "load_embedder",
        "load_quantized_embedder",
    }
)


def pytest_configure(config):
    if "not anvil" in (config.option.markexpr or ""):
        os.environ["TRIBUTA_NO_ANVIL"] = "1"


def pytest_collection_modifyitems(config, items):
    import importlib

    starters = [getattr(importlib.import_module(module), name) for module, name in NODE_STARTERS]
    for item in items:
        if _needs_a_node(item, starters):
            item.add_marker(pytest.mark.anvil)
        if _loads_a_model(item):
            item.add_marker(pytest.mark.slow)


def _needs_a_node(item, starters) -> bool:
    if NODE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    held = vars(getattr(item, "module", None) or object).values()
    return any(value is starter for value in held for starter in starters)


def _loads_a_model(item) -> bool:
    if _is_state_machine(item):
        return True
    info = getattr(item, "_fixtureinfo", None)
    fixtures = [defs[-1].func for defs in (info.name2fixturedefs.values() if info else ()) if defs]
    return any(HEAVY_CALLS & _names_called(func) for func in [getattr(item, "function", None), *fixtures])


def _is_state_machine(item) -> bool:
    import unittest

    cls = getattr(item, "cls", None)
    return isinstance(cls, type) and issubclass(cls, unittest.TestCase) and hasattr(cls, "settings")


def _names_called(func, depth: int = 3) -> set[str]:
    """The global names `func` uses, with those of the same module's functions it calls (to `depth`)."""
    code = getattr(getattr(func, "__wrapped__", func), "__code__", None)
    if code is None:
        return set()
    names, stack = set(), [code]
    while stack:  # nested code: closures, comprehensions, inner functions
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(const for const in current.co_consts if hasattr(const, "co_names"))
    if depth:
        module_globals = getattr(func, "__globals__", {})
        for name in list(names):
            helper = module_globals.get(name)
            if callable(helper) and getattr(helper, "__module__", None) == func.__module__ and helper is not func:
                names |= _names_called(helper, depth - 1)
    return names


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
