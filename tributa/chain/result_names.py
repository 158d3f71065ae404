"""Names for contract results, so bindings read them by field (`task.state`, not `task[7]`).

Bindings use web3's `decode_tuples`, which names a struct result after its ABI components. Vyper
cannot name the values of a multi-value return, and web3 collapses blank names into one key (it
would return only the last value), so each such function gets its names here. A function missing
from the table is named by position (`value_0`, ...), never collapsed.
"""

from __future__ import annotations

from typing import Any

RESULT_NAMES: dict[str, tuple[str, ...]] = {
    "commitment_of": ("block_number", "timestamp"),
    "serving_terms": ("max_new_tokens", "min_cosine_ppm", "logit_margin_milli"),
    "pending_pricing": ("fee_per_task", "fee_at", "deactivation_at"),
    "model_pricing": ("active", "fee_per_task", "fee_receiver"),
    "task_fee_shares": ("protocol_bps", "data_bps"),
    "corrections": ("with_agents_and_slashes", "with_agents", "without_agents"),
    "eip712Domain": ("fields", "name", "version", "chain_id", "verifying_contract", "salt", "extensions"),
}


def with_result_names(abi: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`abi` with every blank output of a multi-value function named (the inputs are untouched)."""
    return [_named(entry) for entry in abi]


def _named(entry: dict[str, Any]) -> dict[str, Any]:
    outputs = entry.get("outputs") or []
    if entry.get("type") != "function" or len(outputs) < 2 or all(o.get("name") for o in outputs):
        return entry
    names = RESULT_NAMES.get(entry["name"], ())
    named = [
        {**output, "name": output.get("name") or (names[i] if i < len(names) else f"value_{i}")}
        for i, output in enumerate(outputs)
    ]
    return {**entry, "outputs": named}
