"""The dashboard's one data layer: every page's facts, read from the chain (the tributa.* readers
the CLI uses) and from an OracleSource (tributa/dashboard/sources.py) for what only the oracle
knows. The oracle's /ui and `tributa dashboard` differ only in that source.

Reads are cached briefly (`ttl_s`): the pages poll every few seconds, and many of them read the
same logs. Content is addressed by CID and never changes, so it is cached for good (bounded).
"""

from __future__ import annotations

import codecs
import json
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable

from hexbytes import HexBytes
from web3 import Web3

from tributa import imo as imo_lib
from tributa.attribution import attribution_doc
from tributa.dashboard.sources import OracleSource
from tributa.dashboard.text import excerpts
from tributa.datasets import list_datasets, read_dataset
from tributa.errors import TributaError
from tributa.registry import list_models, read_model
from tributa.royalties import contributor_sets
from tributa.store import cid as cidlib
from tributa.store import dag
from tributa.tasks import FINAL_STATES, expected_split, list_tasks, read_task

CHART_MINUTES = 30
DATASET_TEXT_BYTES = 2 * 2**20  # a dataset is shown (and searched for spans) up to this much
PAID = ("agent_fee", "model_fee", "data_share", "protocol_fee")  # a settlement's parts; the refund is not a fee


class Missing(TributaError, LookupError):
    """No such task, agent, dataset or model: the page answers 404."""


class _Memo:
    """Values by key, each for `ttl_s` (None: for good), the least recently used dropped past `size`."""

    def __init__(self, ttl_s: float | None, size: int = 512) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, compute: Callable):
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and (hit[0] is None or hit[0] > time.monotonic()):
                self._values.move_to_end(key)
                return hit[1]
        value = compute()  # outside the lock: two pages may compute it at once, never wait on each other
        with self._lock:
            self._values[key] = (None if self.ttl_s is None else time.monotonic() + self.ttl_s, value)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


def _ask(fn, *args):
    """(answer, None), or (None, why) when the oracle could not answer."""
    try:
        return fn(*args), None
    except TributaError as exc:
        return None, str(exc)


class Dashboard:
    def __init__(self, contracts, oracle: OracleSource, ttl_s: float = 1.0) -> None:
        self.contracts = contracts
        self.oracle = oracle
        self._fresh = _Memo(ttl_s)
        self._kept = _Memo(None, size=4096)  # block timestamps and content: they do not change

    # -- shared reads --------------------------------------------------------------------------

    def _logs(self, contract, event: str, **filters) -> list:
        def read():
            return list(
                getattr(contract.events, event).get_logs(
                    from_block=self.contracts.deployment.block_number, argument_filters=filters or None
                )
            )

        return self._fresh.get((contract.address, event, tuple(sorted(filters.items()))), read)

    def _time_of(self, block: int) -> int:
        return self._kept.get(("block", block), lambda: int(self.contracts.w3.eth.get_block(block)["timestamp"]))

    def head(self) -> dict:
        def read():
            block = self.contracts.w3.eth.get_block("latest")
            return {"number": int(block["number"]), "timestamp": int(block["timestamp"])}

        return self._fresh.get("head", read)

    def _content(self, cid: str) -> bytes:
        return self._kept.get(("content", cid), lambda: self.oracle.content.get_bytes(cid))

    def _json_content(self, cid: str) -> tuple[object, str | None]:
        try:
            data = self._content(cid)
        except TributaError as exc:
            return None, f"not readable from {self.oracle.where}: {exc}"
        try:
            return json.loads(data), None
        except ValueError:
            return None, "not JSON (a private task's sealed copy)"

    def _dataset_text(self, content_cid: str) -> tuple[str, bool]:
        """(the dataset's text up to DATASET_TEXT_BYTES, whether it was cut there). As
        tributa.datasets.dataset_text reads it (files in path order, joined by newlines), but
        stopping at the cap: a page must not pull a whole large dataset through the content API."""

        def read():
            decoder, parts, size = codecs.getincrementaldecoder("utf-8")("replace"), [], 0
            files = sorted(
                dag.tree_files(self.oracle.content, cidlib.coerce_cid(content_cid)), key=lambda item: item[0]
            )
            for i, (_, node) in enumerate(files):
                if i:
                    parts.append("\n")
                for chunk in dag.file_chunks(self.oracle.content, node):
                    chunk = chunk[: DATASET_TEXT_BYTES - size]
                    size += len(chunk)
                    parts.append(decoder.decode(chunk))
                    if size >= DATASET_TEXT_BYTES:
                        return "".join(parts), True
            return "".join(parts) + decoder.decode(b"", final=True), False

        return self._kept.get(("text", content_cid), read)

    def _settlements(self) -> dict[int, dict]:
        """task id -> its TaskSettled arguments, with the tx and block."""
        return {
            e["args"]["task_id"]: {
                **e["args"],
                "tx": HexBytes(e["transactionHash"]).to_0x_hex(),
                "block": e["blockNumber"],
            }
            for e in self._logs(self.contracts.escrow, "TaskSettled")
        }

    def _posted(self) -> list:
        return self._logs(self.contracts.escrow, "TaskPosted")

    def header(self) -> dict:
        return {
            "chain_id": self.contracts.chain_id,
            "escrow": self.contracts.escrow.address,
            "oracle": self.oracle.where,
        }

    # -- tasks ---------------------------------------------------------------------------------

    def tasks(self, limit: int = 50) -> list[dict]:
        settled = self._settlements()
        return [
            {"view": v, "settle_tx": settled.get(v.task_id, {}).get("tx")}
            for v in self._fresh.get(("tasks", limit), lambda: list_tasks(self.contracts, None, limit))
        ]

    def activity(self) -> dict:
        """Tasks posted and fees paid per minute over the last CHART_MINUTES minutes of chain time."""
        now = self.head()["timestamp"]
        start = now - now % 60 - (CHART_MINUTES - 1) * 60
        posted, fees = [0] * CHART_MINUTES, [0] * CHART_MINUTES

        def bucket(entries, add) -> None:
            for entry in sorted(
                entries, key=lambda e: e["blockNumber"], reverse=True
            ):  # newest first: stop at the window
                at = self._time_of(entry["blockNumber"])
                if at < start:
                    return
                add(min(CHART_MINUTES - 1, (at - start) // 60), entry)

        bucket(self._posted(), lambda i, e: posted.__setitem__(i, posted[i] + 1))
        bucket(
            self._logs(self.contracts.escrow, "TaskSettled"),
            lambda i, e: fees.__setitem__(i, fees[i] + sum(e["args"][k] for k in PAID)),
        )
        labels = [time.strftime("%H:%M", time.gmtime(start + 60 * i)) for i in range(CHART_MINUTES)]
        return {"posted": list(zip(labels, posted, strict=False)), "fees": list(zip(labels, fees, strict=False))}

    def task(self, task_id: int) -> dict:
        try:
            view = read_task(self.contracts, task_id)
        except TributaError as exc:
            raise Missing(str(exc)) from None
        seen, seen_error = _ask(self.oracle.task, task_id)
        posted = [e for e in self._posted() if e["args"]["task_id"] == task_id]
        posted_at = self._time_of(posted[0]["blockNumber"]) if posted else None
        s = view.settlement
        settled_at = self._time_of(s["block"]) if s else None
        page = {
            "view": view,
            "oracle": seen,
            "oracle_error": seen_error,
            "final": view.state in FINAL_STATES,
            "posted_at": posted_at,
            "settled_at": settled_at,
            "latency_s": settled_at - posted_at if settled_at is not None and posted_at is not None else None,
            "paid": {k: s[k] for k in (*PAID, "refund")} if s else None,
            "expected": None if s else expected_split(self.contracts, view.fee, view.model_fee),
            "input": None,
            "input_error": None,
            "output": None,
            "output_error": None,
            "attribution": attribution_doc(self.contracts, view, self._content),
            "sources": [],
        }
        private = bool(seen and seen.get("private"))
        if private:
            page["input_error"] = "sealed to the oracle (a private task)"
        else:
            page["input"], page["input_error"] = self._json_content(view.input_cid)
        if view.result_cid:
            if private:
                page["output_error"] = "sealed to its requester (a private task)"
            else:
                page["output"], page["output_error"] = self._json_content(view.result_cid)
        page["sources"] = self._span_sources(page["attribution"])
        return page

    def _span_sources(self, attribution: dict | None) -> list[dict]:
        """Per dataset the spans came from: its text's excerpts around them, marked."""
        by_dataset = defaultdict(list)
        for span in (attribution or {}).get("spans", []):
            by_dataset[span["dataset_id"]].append(span["text"])
        sources = []
        for dataset_id, texts in sorted(by_dataset.items(), key=lambda item: str(item[0])):
            entry = {"dataset_id": dataset_id, "texts": texts, "excerpts": [], "cut": False, "error": None}
            try:
                text, entry["cut"] = self._dataset_text(read_dataset(self.contracts, int(dataset_id)).content_cid)
                entry["excerpts"] = excerpts(text, texts)
            except (TributaError, ValueError) as exc:
                entry["error"] = f"its text is not readable from {self.oracle.where}: {exc}"
            sources.append(entry)
        return sources

    # -- agents --------------------------------------------------------------------------------

    def _slashes(self) -> dict[str, list[dict]]:
        slashes = defaultdict(list)
        for e in self._logs(self.contracts.escrow, "AgentSlashed"):
            slashes[e["args"]["agent"]].append(
                {
                    "task_id": e["args"]["task_id"],
                    "amount": e["args"]["amount"],
                    "tx": HexBytes(e["transactionHash"]).to_0x_hex(),
                }
            )
        return slashes

    def _agent_row(self, address: str) -> dict:
        escrow = self.contracts.escrow.functions
        stake, unbonding, release_at, device, capacity, registered = escrow.agent(address).call()
        seen, seen_error = _ask(self.oracle.agent, address)
        slashes = self._slashes().get(address, [])
        return {
            "address": address,
            "registered": bool(registered),
            "stake": stake,
            "unbonding": unbonding,
            "release_at": release_at,
            "device": "gpu" if device else "cpu",
            "capacity": capacity,
            "models": list(escrow.agent_models(address).call()),
            "credited": escrow.balance_of(address).call(),
            "slashes": slashes,
            "slashed": sum(s["amount"] for s in slashes),
            "oracle": seen,
            "oracle_error": seen_error,
        }

    def _agent_addresses(self) -> list[str]:
        escrow = self.contracts.escrow
        return sorted(
            {e["args"]["agent"] for event in ("AgentRegistered", "AgentUpdated") for e in self._logs(escrow, event)}
        )

    def agents(self) -> list[dict]:
        return [self._agent_row(a) for a in self._agent_addresses()]

    def agent(self, address: str) -> dict:
        if not Web3.is_address(address):
            raise Missing(f"{address[:60]!r} is not an address")
        address = Web3.to_checksum_address(address)
        if address not in self._agent_addresses():
            raise Missing(f"{address} has never registered as an agent")
        row = self._agent_row(address)
        answers, row["answers_error"] = _ask(self.oracle.answers, address)
        row["agreement"] = _rolling_agreement(answers or [])
        return row

    # -- datasets ------------------------------------------------------------------------------

    def _claims(self) -> dict[tuple[int, int], list[dict]]:
        claims = defaultdict(list)
        for e in self._logs(self.contracts.vault, "RoyaltyClaimed"):
            a = e["args"]
            claims[(a["dataset_id"], a["version"])].append({"account": a["account"], "amount": a["amount"]})
        return claims

    def _versions(self, d) -> list[dict]:
        sets, claims = contributor_sets(self.contracts), self._claims()
        revenue = self.contracts.vault.functions.revenue
        versions = []
        for v in range(1, d.version + 1):
            contributors, shares = sets.get((d.dataset_id, v), ([], []))
            claimed = claims.get((d.dataset_id, v), [])
            versions.append(
                {
                    "version": v,
                    "contributors": list(zip(contributors, shares, strict=False)),
                    "claims": claimed,
                    "credited": revenue(d.dataset_id, v).call(),
                    "claimed": sum(c["amount"] for c in claimed),
                }
            )
        return versions

    def datasets(self) -> dict:
        def read():
            rows = []
            for d in list_datasets(self.contracts):
                versions = self._versions(d)
                rows.append(
                    {
                        "info": d,
                        "credited": sum(v["credited"] for v in versions),
                        "claimed": sum(v["claimed"] for v in versions),
                    }
                )
            return rows

        rows = self._fresh.get("datasets", read)
        return {"rows": rows, "royalties": [(f"dataset {r['info'].dataset_id}", r["credited"]) for r in rows]}

    def dataset(self, dataset_id: int) -> dict:
        try:
            d = read_dataset(self.contracts, dataset_id)
        except TributaError as exc:
            raise Missing(str(exc)) from None
        models = [m for m in self._models() if dataset_id in m.dataset_ids]
        return {"info": d, "versions": self._versions(d), "models": models}

    # -- models and IMOs -----------------------------------------------------------------------

    def _models(self) -> list:
        return self._fresh.get("models", lambda: list_models(self.contracts.registry))

    def _imo_of(self, model_id: int):
        launcher = self.contracts.launcher
        imo_id = launcher.functions.imo_of_model(model_id).call() if launcher is not None else 0
        return imo_lib.read_imo(self.contracts, imo_id) if imo_id else None

    def _model_earnings(self) -> dict[int, dict]:
        """model id -> tasks posted and model fees paid at settlement."""
        settled = self._settlements()
        earned: defaultdict[int, dict] = defaultdict(lambda: {"tasks": 0, "fees": 0})
        for e in self._posted():
            row = earned[e["args"]["model_id"]]
            row["tasks"] += 1
            row["fees"] += settled.get(e["args"]["task_id"], {}).get("model_fee", 0)
        return earned

    def models(self) -> list[dict]:
        earned = self._model_earnings()
        return [{"info": m, "imo": self._imo_of(m.model_id), **earned[m.model_id]} for m in self._models()]

    def model(self, model_id: int) -> dict:
        try:
            m = read_model(self.contracts.registry, model_id)
        except TributaError as exc:
            raise Missing(str(exc)) from None
        page = {
            "info": m,
            "imo": self._imo_of(model_id),
            "sale": None,
            **self._model_earnings()[model_id],
            "adapters": [str(cidlib.digest_to_cid(d)) for d in m.adapter_digests],
        }
        if page["imo"] is not None:
            page["sale"] = self._sale(page["imo"])
        return page

    def _sale(self, view) -> dict:
        token = imo_lib.token_contract(self.contracts, view.token).functions
        roles = {view.publisher: "publisher", self.contracts.launcher.address: "IMO launcher"}
        return {
            "symbol": token.symbol().call(),
            "ended": self.head()["timestamp"] >= view.sale_end,
            "sold_pct": 100 * view.sold / view.tokens_for_sale if view.tokens_for_sale else 0,
            "raised_pct": 100 * view.raised / view.hard_cap if view.hard_cap else 0,
            "soft_cap_pct": 100 * view.soft_cap / view.hard_cap if view.hard_cap else 0,
            "revenue_in": token.total_revenue_in().call(),
            "revenue_claimed": token.total_claimed().call(),
            "in_escrow": self.contracts.escrow.functions.balance_of(view.token).call(),
            "holders": [
                {"holder": h, "role": roles.get(h.address)} for h in imo_lib.holders(self.contracts, view.token)
            ],
            "buyers": self._buyers(view.imo_id),
        }

    def _buyers(self, imo_id: int) -> list[dict]:
        """Who bought in the sale: paid, tokens, and whether claimed (held in custody until then) or refunded."""
        launcher = self.contracts.launcher
        buyers = sorted({e["args"]["buyer"] for e in self._logs(launcher, "Purchased", imo_id=imo_id)})
        rows = []
        for buyer in buyers:
            paid, tokens, claimed, refunded = launcher.functions.purchased(imo_id, buyer).call()
            rows.append({"address": buyer, "paid": paid, "tokens": tokens, "claimed": claimed, "refunded": refunded})
        return rows

    # -- the oracle ----------------------------------------------------------------------------

    def health(self) -> dict:
        status, status_error = _ask(self.oracle.status)
        text, metrics_error = _ask(self.oracle.metrics)
        head = self.head()
        address = (status or {}).get("oracle") or self.contracts.deployment.oracle
        page = {
            "status": status,
            "status_error": status_error,
            "metrics": _metrics(text) if text else None,
            "metrics_error": metrics_error,
            "head": head,
            "oracle_address": address,
            "gas_balance": self.contracts.w3.eth.get_balance(address),
            "lag_blocks": None,
            "lag_s": None,
        }
        ingested = (status or {}).get("ingested_block")
        if ingested is not None:
            page["lag_blocks"] = max(0, head["number"] - ingested)
            page["lag_s"] = max(0, head["timestamp"] - self._time_of(min(ingested, head["number"])))
        return page


def _rolling_agreement(answers: list[dict], window: int = 20) -> list[tuple[str, float]]:
    """The share of the agent's last `window` judged answers that agreed, after each answer."""
    points: list[tuple[str, float]] = []
    recent: list[bool] = []
    for answer in answers:
        recent = ([*recent, bool(answer["agreed"])])[-window:]
        when = (
            time.strftime("%m-%d %H:%M", time.gmtime(answer["at"])) if answer.get("at") else f"task {answer['task_id']}"
        )
        points.append((f"{when} (task {answer['task_id']})", sum(recent) / len(recent)))
    return points


def _metrics(text: str) -> dict:
    """The oracle's Prometheus samples the health page shows, summed over their labels."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "tributa_oracle_rpc_errors_total": "rpc_errors",
        "tributa_oracle_gas_spent_total": "gas_spent",
        "tributa_oracle_slashes_total": "slashes",
        "tributa_oracle_settled_total": "settled",
        "tributa_oracle_jobs_leased_total": "leases",
        "tributa_oracle_task_latency_seconds_sum": "latency_sum",
        "tributa_oracle_task_latency_seconds_count": "latency_count",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                found[wanted[sample.name]] += sample.value
    mean = found["latency_sum"] / found["latency_count"] if found["latency_count"] else None
    return {**found, "latency_mean_s": mean}
