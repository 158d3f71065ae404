"""`tributa verify watch`: anyone re-executes AIOracle's provisional results on their own copy of
the model and challenges those the acceptance rule rejects, during the challenge window.

The input of a request is on-chain (AICallbackRequest), so a watcher needs only the chain, the
registered model's folders and the bond: no oracle, no upload. Outputs posted as a CID (over
1 KiB) are compared by digest, since their bytes are not on-chain: an honest model on other
hardware may differ there, so such results are reported, not challenged, unless the digest
differs and --challenge-cids is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tributa.ai_oracle import PROVISIONAL
from tributa.catalog import ModelCatalog
from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer
from tributa.errors import ContractRevert, TributaError
from tributa.registry import read_model
from tributa.store import cid_of_bytes, cid_to_digest
from tributa.verification.judge import Judge, RescoreFailed
from tributa.verification.local import claim_checker
from tributa.verification.params import model_params

if TYPE_CHECKING:
    from tributa.runtime.executor import JobRunner

log = logging.getLogger("tributa.watch")


@dataclass(frozen=True)
class Check:
    request_id: int
    verdict: str  # "agrees", "challenged", "disagrees" (not challenged), "skipped"
    note: str = ""
    tx_hash: str | None = None


@dataclass
class Watcher:
    contracts: Contracts
    signer: Signer | None  # None: report only, never challenge
    store: object
    model_dirs: list[Path]
    executor: JobRunner  # .run(base, adapters, input_bytes, max_new_tokens) -> bytes
    bond_wei: int | None = None  # default: AIOracle.challenge_bond
    challenge_cids: bool = False
    from_block: int | None = None
    progress: Callable[[str], None] = print
    _inputs: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # request -> (model, input)
    _cursor: int = field(init=False)  # the last block read (__post_init__ starts it)
    _catalog: ModelCatalog = field(init=False)

    def __post_init__(self) -> None:
        if self.contracts.ai_oracle is None:
            raise TributaError("this deployment has no AIOracle: nothing to watch")
        self.ai_oracle = self.contracts.ai_oracle
        self._catalog = ModelCatalog(self.store)
        for path in self.model_dirs:
            self._catalog.add(path)
        start = self.contracts.deployment.block_number if self.from_block is None else self.from_block
        self._cursor = start - 1

    def poll_once(self) -> list[Check]:
        """Check every result posted since the last poll; returns what was decided."""
        head = self.contracts.w3.eth.block_number
        if head <= self._cursor:
            return []
        events = self.ai_oracle.events
        for ev in events.AICallbackRequest.get_logs(from_block=self._cursor + 1, to_block=head):
            self._inputs[int(ev.args.request_id)] = (int(ev.args.model_id), bytes(ev.args.input))
        posted = list(events.ResultPosted.get_logs(from_block=self._cursor + 1, to_block=head))
        self._cursor = head
        return [self._check(ev.args) for ev in posted]

    def _check(self, posted) -> Check:
        rid = int(posted.request_id)
        request = self.ai_oracle.functions.request(rid).call()
        if request.state != PROVISIONAL:  # finalized, challenged or expired meanwhile
            return Check(rid, "skipped", "no longer provisional")
        if rid not in self._inputs:
            return Check(rid, "skipped", "its request precedes --from-block")
        model_id, input_bytes = self._inputs[rid]
        try:
            base, adapters, max_new_tokens, params = self._model(model_id)
            own = self.executor.run(base, adapters, input_bytes, max_new_tokens)
        except TributaError as exc:
            return Check(rid, "skipped", str(exc))
        except Exception as exc:  # a job that fails here says nothing about the posted result  # noqa: BLE001
            return Check(rid, "skipped", f"re-execution failed: {type(exc).__name__}: {exc}")
        output, is_cid = bytes(posted.output), bool(posted.output_is_cid)
        own_digest = cid_to_digest(cid_of_bytes(own))
        if is_cid:
            if own_digest == bytes(posted.result_digest):
                return Check(rid, "agrees", "same digest")
            if not self.challenge_cids:
                return Check(rid, "disagrees", "a CID output of another digest (give --challenge-cids to challenge it)")
        else:
            # The posted claim is rescored on this machine's model where the bytes differ: an honest
            # answer from other hardware agrees, so its challenger would only lose the bond.
            judge = Judge(
                params,
                claim_checker(
                    base,
                    adapters,
                    input_bytes,
                    max_new_tokens,
                    params.logit_margin,
                    run_callable=getattr(self.executor, "run_callable", None),
                    registry=getattr(self.executor, "registry", None),
                ),
            )
            try:
                if judge.agree(output, own):
                    return Check(rid, "agrees", "" if output == own else "other bytes, accepted by the rule")
            except RescoreFailed as exc:
                return Check(rid, "skipped", str(exc))
        return self._challenge(rid)

    def _model(self, model_id: int):
        model = read_model(self.contracts.registry, model_id)
        base = self._catalog.get(model.weights_digest)
        adapters = [self._catalog.get(d) for d in model.adapter_digests]
        if base is None or any(a is None for a in adapters):
            raise TributaError(f"no local copy of model {model_id}: give its folders with --model-dir")
        return base, adapters, model.serving.max_new_tokens, model_params(self.contracts.registry, model_id)

    def _challenge(self, rid: int) -> Check:
        if self.signer is None:
            return Check(rid, "disagrees", "report only: no account to challenge from")
        bond = self.bond_wei if self.bond_wei is not None else self.ai_oracle.functions.challenge_bond().call()
        try:
            tx = self.signer.transact(self.ai_oracle.functions.challenge(rid), value=bond, action="challenge")
        except ContractRevert as exc:
            return Check(rid, "disagrees", f"challenge refused: {exc.reason}")
        self.progress(
            f"request {rid}: the posted result disagrees with this model's; challenged with {bond} wei in {tx.tx_hash}"
        )
        return Check(rid, "challenged", tx_hash=tx.tx_hash)
