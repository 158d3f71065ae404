"""Reading AIOracle's record of a request, for any role: its state and the result posted for it.

The posted output is in the ResultPosted event (its request_id is indexed), not in storage: the
contract keeps only its hash inside the settlement's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from eth_abi import decode

from tributa.chain.contracts import Contracts
from tributa.store import cid as cidlib

# AIOracle's request states.
REQUESTED, PROVISIONAL, CHALLENGED, FINAL, EXPIRED = 1, 2, 3, 4, 5
# TaskEscrow.Settlement, as fulfil and resolve take it ABI-encoded (escrow.settle's calldata after the selector).
SETTLEMENT_ABI_TYPE = "(uint256,bytes32,bytes32,address[],bytes[],uint256,(address,bytes32,uint256,bytes)[],uint256[],uint16[])"
_CIDV0_PREFIX = b"\x12\x20"


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
        if not self.output.startswith(_CIDV0_PREFIX) or len(self.output) != 34:
            raise ValueError(f"request {self.request_id}'s posted output is not a CIDv0")
        return fetch(str(cidlib.digest_to_cid(self.output[2:])))


def request_state(contracts: Contracts, request_id: int) -> int:
    """0 for a task that is no AIOracle request."""
    if contracts.ai_oracle is None:
        return 0
    return int(contracts.ai_oracle.functions.request(request_id).call()[4])


def posted_result(contracts: Contracts, request_id: int) -> PostedResult | None:
    """The result fulfil posted for `request_id`, or None if none was."""
    if contracts.ai_oracle is None:
        return None
    logs = contracts.ai_oracle.events.ResultPosted.get_logs(
        argument_filters={"request_id": request_id}, from_block=contracts.deployment.block_number)
    if not logs:
        return None
    posted = logs[-1]  # fulfil posts once per request: a resolve never posts again
    args = posted.args
    return PostedResult(request_id, bytes(args.result_digest), bytes(args.output), bool(args.output_is_cid),
                        bytes(posted.transactionHash))


def original_agents(contracts: Contracts, posted: PostedResult) -> list[str] | None:
    """The agents the posted settlement paid (a challenge's committee leaves them out), read from
    the fulfil transaction's calldata; None if that was not a direct call of AIOracle.fulfill."""
    tx = contracts.w3.eth.get_transaction(posted.tx_hash)
    try:
        fn, args = contracts.ai_oracle.decode_function_input(tx["input"])
    except ValueError:
        return None
    if fn.fn_name != "fulfill" or int(args["request_id"]) != posted.request_id:
        return None
    settlement = decode([SETTLEMENT_ABI_TYPE], bytes(args["settlement"]))[0]
    return [contracts.w3.to_checksum_address(a) for a in settlement[3]]


def request_input(contracts: Contracts, request_id: int, from_block: int | None = None) -> tuple[int, bytes] | None:
    """(model id, input bytes) of a request, from its AICallbackRequest event; None if not found."""
    logs = contracts.ai_oracle.events.AICallbackRequest.get_logs(
        argument_filters={"request_id": request_id},
        from_block=contracts.deployment.block_number if from_block is None else from_block)
    if not logs:
        return None
    return int(logs[0].args.model_id), bytes(logs[0].args.input)
