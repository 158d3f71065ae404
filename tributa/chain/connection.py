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
    except Exception as exc:  # requests/urllib3 errors differ by failure; all mean "unreachable"
        raise ChainError(
            f"cannot reach an Ethereum node at {rpc_url} ({type(exc).__name__}); "
            f"is Anvil running? (`make demo` starts one) or pass --rpc-url"
        ) from None
    return w3
