"""Every multi-value result of every contract has names, so bindings read fields by name and
web3's `decode_tuples` never collapses blank names into one value."""

from __future__ import annotations

import pytest
from vyper.compiler.output import build_abi_output
from web3._utils.abi import named_tree, recursive_dict_to_namedtuple

from tests.contracts import helpers as h
from tributa.chain.result_names import RESULT_NAMES, with_result_names

CONTRACTS = ("TaskEscrow", "DataRegistry", "RoyaltyVault", "IMOLauncher", "ModelToken", "AIOracle", "AICommittee")


def _multi_value_functions(abi):
    return [e for e in abi if e.get("type") == "function" and len(e.get("outputs") or []) > 1]


@pytest.mark.parametrize("name", CONTRACTS)
def test_result_names__every_multi_value_function__named_from_the_table(name):
    abi = with_result_names(build_abi_output(h.partial(name).compiler_data))
    for fn in _multi_value_functions(abi):
        names = [o["name"] for o in fn["outputs"]]
        assert tuple(names) == RESULT_NAMES[fn["name"]], fn["name"]  # in the table, one name per value
        assert len(set(names)) == len(names)


def test_result_names__decoded_as_web3_does__keep_every_value():
    blank = build_abi_output(h.partial("DataRegistry").compiler_data)
    (pricing,) = [e for e in with_result_names(blank) if e.get("name") == "model_pricing"]
    (unnamed,) = [e for e in blank if e.get("name") == "model_pricing"]
    values = [True, 7, "0x" + "11" * 20]
    assert len(named_tree(unnamed["outputs"], values)) == 1  # what the names prevent: one value left
    decoded = recursive_dict_to_namedtuple(named_tree(pricing["outputs"], values))
    assert decoded.fee_per_task == 7 and tuple(decoded) == tuple(values)


def test_result_names__unknown_function__named_by_position_and_inputs_untouched():
    entry = {
        "type": "function",
        "name": "not_in_the_table",
        "inputs": [{"type": "uint256", "name": ""}],
        "outputs": [{"type": "uint256", "name": ""}, {"type": "bool", "name": "ok"}],
    }
    (named,) = with_result_names([entry])
    assert [o["name"] for o in named["outputs"]] == ["value_0", "ok"]
    assert named["inputs"] == entry["inputs"] and entry["outputs"][0]["name"] == ""  # the input ABI is not mutated
