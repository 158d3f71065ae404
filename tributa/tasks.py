"""Posting tasks and reading them back: shared by the CLI, the demo and the tests."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from hexbytes import HexBytes

from tributa import json_input
from tributa.chain.contracts import Contracts
from tributa.chain.events import first_event
from tributa.chain.tx import Signer, TxResult
from tributa.errors import ContractRevert, ModelFeeAboveMax, TributaError
from tributa.registry import read_model
from tributa.store import cid as cidlib

STATES = {0: "unknown", 1: "open", 2: "settled", 3: "failed", 4: "refunded"}
BPS = 10_000


@dataclass(frozen=True)
class PostedTask:
    task_id: int
    input_cid: str
    fee: int
    tx: TxResult


@dataclass
class TaskView:
    task_id: int
    requester: str
    model_id: int
    input_cid: str
    fee: int
    model_fee: int
    deadline: int
    k: int
    state: str
    settlement: dict[str, Any] | None = None
    failure: str | None = None
    refund_tx: str | None = None
    events: list[str] = field(default_factory=list)

    @property
    def result_cid(self) -> str | None:
        if not self.settlement:
            return None
        return str(cidlib.digest_to_cid(self.settlement["result_digest"]))

    @property
    def attribution_cid(self) -> str | None:
        if not self.settlement or not any(self.settlement["attribution_digest"]):
            return None
        return str(cidlib.digest_to_cid(self.settlement["attribution_digest"]))


def min_fee(contracts: Contracts, model_id: int, model_fee: int | None = None) -> int:
    """The smallest fee post_task accepts for this model (at `model_fee`, else its current fee)."""
    model_fee = model_fee if model_fee is not None else model_fee_of(contracts, model_id)
    escrow = contracts.escrow.functions
    cut_bps = escrow.protocol_fee_bps().call() + escrow.data_share_bps().call()
    # fee - fee*cut/BPS >= model_fee  <=>  fee >= model_fee*BPS/(BPS-cut), rounded up, plus slack for floors
    return -(-model_fee * BPS // (BPS - cut_bps)) + 2


def default_fee(contracts: Contracts, model_id: int, model_fee: int | None = None) -> int:
    """The fee post_task escrows when none is given: twice the minimum, so the agents get paid too,
    rounded up to two significant digits (0.0027 ETH, not 0.002666666666666672 ETH)."""
    return round_up(2 * min_fee(contracts, model_id, model_fee))


def round_up(amount: int, digits: int = 2) -> int:
    """`amount` rounded up to `digits` significant decimal digits (never below it)."""
    step = 10 ** max(0, len(str(amount)) - digits) if amount > 0 else 1
    return -(-amount // step) * step


@dataclass(frozen=True)
class FeeSplit:
    """How the escrow will split `fee` at settlement, as far as the chain fixes it now. The agents'
    part is the oracle's fee policy (at most `agents_max`); what no one is paid is refunded."""

    fee: int
    protocol_fee: int
    protocol_fee_bps: int
    data_share: int  # to the datasets the attribution names; refunded when it names none
    data_share_bps: int
    model_fee: int
    agents_max: int


def expected_split(contracts: Contracts, fee: int, model_fee: int) -> FeeSplit:
    """The split the escrow applies (TaskEscrow._apply, floors included) to a task of `fee`
    whose model fee is `model_fee`."""
    escrow = contracts.escrow.functions
    protocol_bps, data_bps = escrow.protocol_fee_bps().call(), escrow.data_share_bps().call()
    protocol, data = fee * protocol_bps // BPS, fee * data_bps // BPS
    return FeeSplit(fee, protocol, protocol_bps, data, data_bps, model_fee, max(0, fee - protocol - data - model_fee))


def model_fee_of(contracts: Contracts, model_id: int) -> int:
    """The model's fee per task as it stands now: what a requester is shown and accepts as its max."""
    return read_model(contracts.registry, model_id).fee_per_task


def encode_input(
    prompt: str | None = None,
    texts: list[str] | None = None,
    max_new_tokens: int | None = None,
    adapter: str | None = None,
    chat: bool = False,
) -> bytes:
    """The canonical JSON input of a generation (prompt, optionally an adapter's CID, optionally
    wrapped in the tokenizer's chat template as one user turn) or embedding (texts) task."""
    if (prompt is None) == (not texts):
        raise TributaError("give either a prompt (generation) or texts (embedding)")
    if adapter is not None and prompt is None:
        raise TributaError("an adapter applies to generation only: give --prompt with --adapter")
    if chat and prompt is None:
        raise TributaError("a chat template applies to generation only: give --prompt with --chat")
    if prompt is not None and not prompt.strip():
        raise TributaError("the prompt is empty: give the text the model should continue or answer")
    if texts and not all(t.strip() for t in texts):
        raise TributaError("an embedding text is empty")
    body: dict[str, Any] = {"prompt": prompt} if prompt is not None else {"texts": list(texts or [])}
    if max_new_tokens is not None:
        body["max_new_tokens"] = max_new_tokens
    if adapter is not None:
        body["adapter"] = adapter
    if chat:
        body["chat"] = True
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def check_input_shape(data: bytes, where: str = "the input") -> None:
    """The shape every agent checks, checked before paying: a JSON object with a non-empty
    "prompt" string (generation) or a non-empty list of strings in "texts" (embedding). The
    agent's runtime checks the rest (fields, limits, the model's context) and refunds on failure."""
    try:
        body = json_input.loads(data)
    except ValueError:
        raise TributaError(f"{where} is not JSON") from None
    if not isinstance(body, dict):
        raise TributaError(f'{where} must be a JSON object with "prompt" or "texts"')
    if ("prompt" in body) == ("texts" in body):
        raise TributaError(f'{where} needs exactly one of "prompt" (generation) or "texts" (embedding)')
    if "prompt" in body and not (isinstance(body["prompt"], str) and body["prompt"].strip()):
        raise TributaError(f'{where}: "prompt" must be a non-empty string, not {json.dumps(body["prompt"])[:40]}')
    texts = body.get("texts")
    if "texts" in body and not (
        isinstance(texts, list) and texts and all(isinstance(t, str) and t.strip() for t in texts)
    ):
        raise TributaError(f'{where}: "texts" must be a non-empty list of non-empty strings')


def post_task(
    contracts: Contracts,
    signer: Signer,
    store,
    model_id: int,
    input_bytes: bytes,
    fee: int | None = None,
    deadline_s: int = 600,
    k: int = 1,
    max_model_fee: int | None = None,
) -> PostedTask:
    """Store the input, then post the task with its fee in escrow.

    `max_model_fee` is the highest model fee accepted (default: the fee as read now, i.e. what the
    caller was shown); if the publisher raised it meanwhile, the escrow refuses and this raises
    ModelFeeAboveMax naming both fees.
    """
    input_cid = str(store.put_bytes(input_bytes))
    store.pin(input_cid)
    if max_model_fee is None:
        max_model_fee = model_fee_of(contracts, model_id)
    fee = fee if fee is not None else default_fee(contracts, model_id, max_model_fee)
    now = contracts.w3.eth.get_block("latest")["timestamp"]
    call = contracts.escrow.functions.post_task(
        model_id, cidlib.cid_to_digest(input_cid), now + deadline_s, k, max_model_fee
    )
    try:
        result = signer.transact(call, value=fee, action="post_task")
    except ContractRevert as exc:
        if exc.reason != ModelFeeAboveMax.REASON:
            raise
        try:
            current = model_fee_of(contracts, model_id)
        except Exception:  # the revert is what matters; the fee read is only for the message  # noqa: BLE001
            current = None
        raise ModelFeeAboveMax(current, max_model_fee) from None
    task_id = first_event(contracts.escrow, "TaskPosted", result.receipt)["task_id"]
    return PostedTask(task_id, input_cid, fee, result)


def _task_logs(contracts: Contracts, event_name: str, task_id: int) -> list:
    event = getattr(contracts.escrow.events, event_name)
    return event.get_logs(from_block=contracts.deployment.block_number, argument_filters={"task_id": task_id})


def _read_state(contracts: Contracts, task_id: int) -> TaskView:
    """The task as the escrow stores it (one call, no logs): enough for lists and polling."""
    count = contracts.escrow.functions.task_count().call()
    if not 1 <= task_id <= count:
        raise TributaError(f"task {task_id} does not exist (there are {count} tasks)")
    requester, model_id, input_digest, fee, model_fee, deadline, k, state = contracts.escrow.functions.task(
        task_id
    ).call()
    return TaskView(
        task_id=task_id,
        requester=requester,
        model_id=model_id,
        input_cid=str(cidlib.digest_to_cid(bytes(input_digest))),
        fee=fee,
        model_fee=model_fee,
        deadline=deadline,
        k=k,
        state=STATES.get(state, str(state)),
    )


def read_task(contracts: Contracts, task_id: int) -> TaskView:
    view = _read_state(contracts, task_id)
    if view.state == "settled":
        for entry in _task_logs(contracts, "TaskSettled", task_id):
            args = dict(entry["args"])
            args["tx"] = HexBytes(entry["transactionHash"]).to_0x_hex()
            args["block"] = entry["blockNumber"]
            view.settlement = args
    for entry in _task_logs(contracts, "TaskFailed", task_id):
        view.failure = entry["args"]["reason"]
    for entry in _task_logs(contracts, "TaskRefunded", task_id):
        view.refund_tx = HexBytes(entry["transactionHash"]).to_0x_hex()
    return view


def list_tasks(
    contracts: Contracts,
    requester: str | None = None,
    limit: int = 20,
    state: str | None = None,
    model_id: int | None = None,
) -> list[TaskView]:
    """The newest `limit` tasks (of `requester`, on `model_id`, in `state`, each if given), newest
    first, as the escrow stores them. The filters apply before the limit."""
    if requester is None and model_id is None:
        count = contracts.escrow.functions.task_count().call()
        ids = list(range(count, 0, -1))
    else:
        filters = {"requester": requester, "model_id": model_id}
        logs = contracts.escrow.events.TaskPosted.get_logs(
            from_block=contracts.deployment.block_number,
            argument_filters={k: v for k, v in filters.items() if v is not None},
        )
        ids = sorted((entry["args"]["task_id"] for entry in logs), reverse=True)
    views: list[TaskView] = []
    for task_id in ids:
        if len(views) >= limit:
            break
        view = _read_state(contracts, task_id)
        if state is None or view.state == state:
            views.append(view)
    return views


def settled_weights(contracts: Contracts, view: TaskView) -> list[tuple[int, int]] | None:
    """The (dataset id, weight bps) pairs a settled task paid its data share by, read from the
    settlement transaction's own calldata (the event does not log them). None when that
    transaction is not a direct settle/settle_batch call to the escrow (e.g. a relayed one)."""
    if not view.settlement:
        return None
    tx = contracts.w3.eth.get_transaction(view.settlement["tx"])
    if tx["to"] != contracts.escrow.address:
        return None
    try:
        function, args = contracts.escrow.decode_function_input(tx["input"])
    except ValueError:
        return None
    batch = args["batch"] if function.fn_name == "settle_batch" else [args["s"]] if function.fn_name == "settle" else []
    for s in batch:
        if s["task_id"] == view.task_id:
            return list(zip(s["dataset_ids"], s["dataset_weights_bps"], strict=False))
    return None


FINAL_STATES = ("settled", "failed", "refunded")


class WaitTimeout(TributaError):
    """wait_until_final gave up: some task was not final in time (`views` holds the last look)."""

    def __init__(self, message: str, views: dict[int, TaskView]) -> None:
        super().__init__(message)
        self.views = views


def wait_until_final(
    contracts: Contracts,
    task_ids: list[int],
    timeout_s: float,
    watch=(),
    final=FINAL_STATES,
    on_poll=None,
    poll_s: float = 0.25,
) -> dict[int, TaskView]:
    """Poll until every task is in one of `final`; `watch` holds processes that must stay alive;
    `on_poll` hears each look at the tasks' state. Raises WaitTimeout after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        # Polling reads only the escrow's state; the logs are read once, for the answer.
        views = {t: _read_state(contracts, t) for t in task_ids}
        if on_poll is not None:
            on_poll(views)
        if all(v.state in final for v in views.values()):
            return {t: read_task(contracts, t) for t in task_ids}
        for proc in watch:
            if not proc.alive():
                raise TributaError(f"the {proc.name} exited early:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"{p.name} log:\n{p.log_tail()}" for p in watch)
            waiting = {t: v.state for t, v in views.items() if v.state not in final}
            raise WaitTimeout(
                f"tasks not yet {'/'.join(final)} after {timeout_s:.0f}s: {waiting}" + (f"\n{logs}" if logs else ""),
                views,
            )
        time.sleep(poll_s)


def oracle_public_key(contracts: Contracts, oracle_url: str) -> bytes:
    """The oracle's key from its API, accepted only if it is the deployment's oracle address's key."""
    import httpx

    from tributa.crypto import check_public_key_owner

    try:
        info = httpx.get(oracle_url.rstrip("/") + "/v1/health", timeout=10).json()
        key = bytes.fromhex(str(info["oracle_public_key"]).removeprefix("0x"))
    except (httpx.HTTPError, ValueError, KeyError):
        raise TributaError(
            f"cannot read the oracle's public key from {oracle_url}; is `tributa oracle run` up?"
        ) from None
    check_public_key_owner(key, contracts.deployment.oracle)
    return key


def post_private_task(
    contracts: Contracts, signer: Signer, store, model_id: int, input_bytes: bytes, oracle_url: str, **kwargs
) -> PostedTask:
    """Seal the input (and the requester's output key) to the oracle, then post as usual."""
    from tributa import private
    from tributa.crypto import public_key_of

    where = private.Deployment(contracts.chain_id, contracts.escrow.address)
    sealed = private.seal_input(
        oracle_public_key(contracts, oracle_url),
        input_bytes,
        public_key_of(bytes(signer.account.key)),
        where,
        signer.address,
    )
    return post_task(contracts, signer, store, model_id, sealed, **kwargs)


def open_private_result(contracts: Contracts, signer: Signer, store, view: TaskView, oracle_url: str) -> bytes:
    """A private task's output: fetched sealed (from this machine's store, else through the
    oracle's content API on a request the requester signs), opened with the requester's key,
    checked on-chain."""
    import httpx

    from tributa import private
    from tributa.content_api import ContentApi

    if view.settlement is None:
        raise TributaError(f"task {view.task_id} is {view.state}; there is no result to open")
    try:
        info = httpx.get(f"{oracle_url.rstrip('/')}/v1/tasks/{view.task_id}", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        raise TributaError(
            f"cannot ask the oracle at {oracle_url} where task {view.task_id}'s sealed result is"
        ) from None
    sealed_cid = info.get("result_ciphertext_cid")
    if not sealed_cid:
        raise TributaError(f"task {view.task_id} has no sealed result (it is not a private task)")
    where = private.Deployment(contracts.chain_id, contracts.escrow.address)
    with ContentApi(oracle_url, contracts.chain_id, contracts.escrow.address, signer.account) as remote:
        sealed = read_content(store, remote, sealed_cid)
    output = private.open_output(bytes(signer.account.key), sealed, where, view.requester, view.task_id)
    if cidlib.cid_to_digest(str(store.cid_of(output))) != bytes(view.settlement["result_digest"]):
        raise TributaError(f"task {view.task_id}'s sealed result does not match the digest settled on-chain")
    return output


def read_content(store, remote, cid: str) -> bytes:
    """`cid`'s bytes from this machine's store, else from `remote` (the oracle's content API,
    every block re-hashed there)."""
    from tributa.store.errors import NotFound

    try:
        return store.get_bytes(cid)
    except NotFound:
        return remote.get_bytes(cid)
