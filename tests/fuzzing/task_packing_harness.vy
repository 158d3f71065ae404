# pragma version ~=0.4.3
"""
@title Test harness for contracts/modules/task_packing.vy
@notice Exposes the module's internal functions, one external function each,
        for tests/fuzzing/test_task_packing.py. Not deployed anywhere else.
"""

from contracts.modules import task_packing


@external
@pure
def max_fee() -> uint256:
    return task_packing.MAX_FEE


@external
@pure
def pack_a(requester: address, deadline: uint256, k: uint256, state: uint256, pbps: uint256, dbps: uint256, slashable: uint256) -> uint256:
    return task_packing._pack_a(requester, deadline, k, state, pbps, dbps, slashable)


@external
@pure
def requester(a: uint256) -> address:
    return task_packing._requester(a)


@external
@pure
def deadline(a: uint256) -> uint256:
    return task_packing._deadline(a)


@external
@pure
def k(a: uint256) -> uint256:
    return task_packing._k(a)


@external
@pure
def state(a: uint256) -> uint256:
    return task_packing._state(a)


@external
@pure
def with_state(a: uint256, state: uint256) -> uint256:
    return task_packing._with_state(a, state)


@external
@pure
def protocol_bps(a: uint256) -> uint256:
    return task_packing._protocol_bps(a)


@external
@pure
def data_bps(a: uint256) -> uint256:
    return task_packing._data_bps(a)


@external
@pure
def slashable(a: uint256) -> bool:
    return task_packing._slashable(a)


@external
@pure
def pack_b(fee: uint256, model_fee: uint256, model_id: uint256) -> uint256:
    return task_packing._pack_b(fee, model_fee, model_id)


@external
@pure
def fee(b: uint256) -> uint256:
    return task_packing._fee(b)


@external
@pure
def model_fee(b: uint256) -> uint256:
    return task_packing._model_fee(b)


@external
@pure
def model_id(b: uint256) -> uint256:
    return task_packing._model_id(b)
