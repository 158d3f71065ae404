"""Reading AIOracle's record of a request, for any role: its state and the result posted for it.

The posted output is in the ResultPosted event (its request_id is indexed), not in storage: the
contract keeps only its hash inside the settlement's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_typing import Hash32

from tributa.chain.contracts import Contracts
from tributa.store import cid as cidlib

# AIOracle's request states.
REQUESTED, PROVISIONAL, CHALLENGED, FINAL, EXPIRED = 1, 2, 3, 4, 5
# TaskEscrow.Settlement, as fulfil and resolve take it ABI-encoded (escrow.settle's calldata after the selector).
SETTLEMENT_ABI_TYPE = (
    "(uint256,bytes32,bytes32,address[],bytes[],uint256,(address,bytes32,uint256,bytes)[],uint256[],uint16[])"
)
_CIDV0_PREFIX = b"\x12\x20"  # sha2-256, 32 bytes
_CIDV1_DAG_PB_PREFIX = b"\x01\x70\x12\x20"  # the other form AIOracle takes (a raw-codec one names other bytes)
# Logs are searched back from a known block in ranges a node serves (many refuse wider ones),
# at most as far as a request lives: 7 days each of response, challenge and committee windows.
LOG_CHUNK_BLOCKS = 5_000
MAX_SEARCH_BLOCKS = 160_000


@dataclass(frozen=True)
class PostedResult:
    request_id: int
    result_digest: bytes
    output: bytes  # the bytes posted on-chain: the output itself, or a longer one's binary CIDv0
    output_is_cid: bool
    tx_hash: bytes  # the fulfil that posted it

    def output_bytes(self, fetch: Callable[[str], bytes]) -> bytes:
        """The output itself: the posted bytes, or a CID output read through `fetch(cid)` (which
        must re-hash what it returns)."""
        if not self.output_is_cid:
            return self.output
        digest = self.output[-32:]
        if len(self.output) != len(_CIDV0_PREFIX) + 32 or not self.output.startswith(_CIDV0_PREFIX):
            if len(self.output) != len(_CIDV1_DAG_PB_PREFIX) + 32 or not self.output.startswith(_CIDV1_DAG_PB_PREFIX):
                raise ValueError(f"request {self.request_id}'s posted output is not a CIDv0 or dag-pb CIDv1")
        return fetch(str(cidlib.digest_to_cid(digest)))


def request_state(contracts: Contracts, request_id: int) -> int:
    """0 for a task that is no AIOracle request."""
    if contracts.ai_oracle is None:
        return 0
    return int(contracts.ai_oracle.functions.request(request_id).call().state)


def find_logs(contracts: Contracts, event, request_id: int, before_block: int):
    """The latest `event` log of `request_id` at or before `before_block`, searched backwards in
    LOG_CHUNK_BLOCKS ranges, down to the deployment's block or MAX_SEARCH_BLOCKS; None if none."""
    floor = max(contracts.deployment.block_number, before_block - MAX_SEARCH_BLOCKS)
    end = before_block
    while end >= floor:
        start = max(floor, end - LOG_CHUNK_BLOCKS + 1)
        logs = event.get_logs(argument_filters={"request_id": request_id}, from_block=start, to_block=end)
        if logs:
            return logs[-1]
        end = start - 1
    return None


def posted_result(contracts: Contracts, request_id: int, before_block: int | None = None) -> PostedResult | None:
    """The result fulfil posted for `request_id` (at or before `before_block`, default the tip),
    or None if none was."""
    if contracts.ai_oracle is None:
        return None
    tip = contracts.w3.eth.block_number if before_block is None else before_block
    posted = find_logs(contracts, contracts.ai_oracle.events.ResultPosted, request_id, tip)
    if posted is None:
        return None
    # fulfil posts once per request: a resolve never posts again
    args = posted.args
    return PostedResult(
        request_id,
        bytes(args.result_digest),
        bytes(args.output),
        bool(args.output_is_cid),
        bytes(posted.transactionHash),
    )


def original_agents(contracts: Contracts, posted: PostedResult) -> list[str] | None:
    """The agents the posted settlement paid (a challenge's committee leaves them out), read from
    the fulfil transaction's calldata; None if that was not a direct call of AIOracle.fulfill."""
    if contracts.ai_oracle is None:
        return None
    tx = contracts.w3.eth.get_transaction(Hash32(posted.tx_hash))
    try:
        fn, args = contracts.ai_oracle.decode_function_input(tx["input"])
        if fn.fn_name != "fulfill" or int(args["request_id"]) != posted.request_id:
            return None
        settlement = decode([SETTLEMENT_ABI_TYPE], bytes(args["settlement"]))[0]
    except (ValueError, DecodingError):  # not a direct fulfill, or words fulfil never reads
        return None
    return [contracts.w3.to_checksum_address(a) for a in settlement[3]]
