"""A settled task's attribution as people read it: `task show` and the dashboard both use this."""

from __future__ import annotations

import json
from collections.abc import Callable

from tributa.errors import TributaError
from tributa.tasks import TaskView, settled_weights


def attribution_doc(contracts, view: TaskView, read: Callable[[str], bytes]) -> dict | None:
    """Weights as settled on-chain (from the settle transaction), else as the oracle's record
    states them; the record's source, spans and unindexed datasets when `read` (a CID's bytes)
    can get the record. None: not settled."""
    if not view.settlement:
        return None
    envelope, record_error = {}, None
    if view.attribution_cid:
        try:
            envelope = json.loads(read(view.attribution_cid))
        except (TributaError, ValueError) as exc:  # not readable here, nor from the oracle, or not JSON
            record_error = f"not readable here: {exc}"
    settlement = envelope.get("settlement", {})
    pairs = settled_weights(contracts, view)
    if pairs is None:
        pairs = list(zip(settlement.get("dataset_ids", []), settlement.get("weights_bps", []), strict=False))
    ids = envelope.get("datasets", {})  # the record names datasets by content CID
    return {
        "cid": view.attribution_cid,
        "source": settlement.get("source"),
        "weights": [{"dataset_id": d, "weight_bps": bps} for d, bps in pairs],
        "spans": [
            {
                "output_start": span.get("output_start"),
                "output_end": span.get("output_end"),
                "dataset_id": ids.get(span.get("dataset_id"), span.get("dataset_id")),
                "text": span.get("text", ""),
            }
            for span in (envelope.get("record") or {}).get("spans", [])
        ],
        "record_error": record_error,
    }
