"""Connecting to an RPC node, with errors that say what to check."""

from __future__ import annotations

from web3 import Web3
from web3.providers import HTTPProvider

from tributa.errors import ChainError


def connect(rpc_url: str, timeout_s: float = 10.0) -> Web3:
    """A Web3 bound to `rpc_url`, proven reachable by one eth_chainId call."""
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainError(f"RPC URL {rpc_url!r} is not http(s)://; pass e.g. --rpc-url http://127.0.0.1:8545")
    # web3 asks the node for eth_chainId before every call it validates; a node's chain id never
    # changes, so that one answer is cached (block reads are not: reorg detection needs them fresh).
    provider = HTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout_s}, cache_allowed_requests=True, cacheable_requests={"eth_chainId"}
    )
    w3 = Web3(provider)
    try:
        w3.eth.chain_id  # noqa: B018 - the cheapest call that proves the node answers
    except Exception as exc:  # requests/urllib3 errors differ by failure; all mean "unreachable"  # noqa: BLE001
        raise ChainError(
            f"cannot reach an Ethereum node at {rpc_url} ({type(exc).__name__}); "
            f"is Anvil running? (`make demo` starts one) or pass --rpc-url"
        ) from None
    return w3


def wait_for_node(rpc_url: str, wait_s: float, log, poll_s: float = 2.0) -> Web3:
    """`connect(rpc_url)`, retried for up to `wait_s` while the node does not answer: a service
    started before its node (a reboot, a node restarting) waits for it instead of exiting. One
    log line when it starts waiting and one when the node answers; ChainError after `wait_s`."""
    import time

    started = time.monotonic()
    waiting = False
    while True:
        try:
            w3 = connect(rpc_url)
        except ChainError as exc:
            waited = time.monotonic() - started
            if waited + poll_s > wait_s:
                raise ChainError(f"{exc} (waited {waited:.0f}s; --node-wait-s sets how long)") from None
            if not waiting:
                log.warning("%s; waiting up to %.0fs for it", exc, wait_s)
                waiting = True
            time.sleep(poll_s)
            continue
        if waiting:
            log.info("the chain node at %s answered after %.0fs", rpc_url, time.monotonic() - started)
        return w3
