"""Helpers for the ModelToken / IMOLauncher tests (titanoboa).

Used by tests/contracts/test_model_token.py, tests/contracts/test_imo_launcher.py and
tests/stateful/test_model_token_state.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import boa
from eth_abi import decode as abi_decode
from eth_utils import to_canonical_address

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"

ETHER = 10**18
UNIT = 10**18  # base units per whole token
DAY = 86_400
BPS = 10_000
MAGNITUDE = 2**128
ZERO_ADDRESS = "0x" + "00" * 20

ACTIVE, SUCCEEDED, FAILED = 1, 2, 3


@functools.cache
def partial(name: str):
    """Compiles a contract once per process."""
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        return boa.load_partial(str(CONTRACTS / f"{name}.vy"))
    finally:
        os.chdir(old)


def funded(alias: str | None = None, balance: int = 1_000 * ETHER) -> str:
    addr = boa.env.generate_address(alias)
    boa.env.set_balance(addr, balance)
    return addr


def deploy_token(
    custodian: str,
    supply: int = 1_000_000 * UNIT,
    redeem_share_bps: int = 1_000,
    model_id: int = 7,
    name: str = "Tiny GPT2 Model",
    symbol: str = "TGPT",
):
    with boa.env.prank(custodian):
        return partial("ModelToken").deploy(name, symbol, supply, custodian, redeem_share_bps, model_id)


def send_revenue(token, sender: str, amount: int):
    """Plain ETH transfer to the token (its `__default__`), as TaskEscrow.withdraw_for does."""
    return boa.env.raw_call(token.address, sender=sender, value=amount)


def send_revenue_reverts(token, sender: str, amount: int, reason: str) -> None:
    """Asserts that a plain ETH transfer to the token reverts with `reason`."""
    from eth.exceptions import Revert

    try:
        send_revenue(token, sender, amount)
    except Revert as exc:
        output = exc.args[0]
        assert output[:4] == bytes.fromhex("08c379a0"), output
        assert abi_decode(["string"], output[4:])[0] == reason
    else:
        raise AssertionError(f"revenue-in of {amount} did not revert")


def events(contract, name: str) -> list:
    """Decoded events called `name` emitted in `contract`'s last call."""
    return [e for e in contract.get_logs() if type(e).__name__ == name]


def intrinsic_gas(calldata: bytes) -> int:
    """21000 + calldata cost (EIP-2028): the part of a tx's gas that boa does not meter."""
    return 21_000 + sum(16 if b else 4 for b in calldata)


@contextlib.contextmanager
def gas_env():
    """A fresh boa Env for gas measurements. `tx_gas` commits state between calls
    (to price each call as its own transaction), which must not happen inside the
    anchors the other tests roll back with."""
    with boa.swap_env(boa.Env()):
        yield


def _begin_tx(sender: str, to: str) -> None:
    """Emulates a transaction boundary in boa: storage 'original values' are reset
    (EIP-2200 pricing), every slot and account goes cold again (EIP-2929) except the
    sender and the target, which a real transaction warms."""
    state = boa.env.evm.vm.state
    state.lock_changes()
    boa.env.reset_gas_used()
    state.mark_address_warm(to_canonical_address(sender))
    state.mark_address_warm(to_canonical_address(to))


def _full_tx_gas(computation, calldata: bytes) -> int:
    intrinsic = intrinsic_gas(calldata)
    used = intrinsic + computation.get_gas_used()
    refund = min(computation.get_gas_refund(), used // 5)  # EIP-3529 cap
    return used - refund


def tx_gas(contract, fn_name: str, *args, sender: str, value: int = 0) -> tuple[int, object]:
    """Gas of `contract.fn_name(*args)` as a full transaction would pay it
    (intrinsic + calldata + execution - capped refund). Returns (gas, result)."""
    fn = getattr(contract, fn_name)
    calldata = fn.prepare_calldata(*args)
    _begin_tx(sender, contract.address)
    result = fn(*args, sender=sender, value=value)
    return _full_tx_gas(contract._computation, calldata), result


def revenue_in_gas(token, sender: str, amount: int) -> int:
    """Gas of a plain ETH transfer of `amount` to the token, as a full transaction."""
    _begin_tx(sender, token.address)
    computation = send_revenue(token, sender, amount)
    return _full_tx_gas(computation, b"")
