# pragma version ~=0.4.3
"""
@title Tributa TaskEscrow task words
@custom:contract-name task_packing
@license MIT
@notice Stateless packing and unpacking of TaskEscrow's two storage words per
        task. Word A: requester (bits 0..159) | deadline (160..199) | k
        (200..207) | state (208..215) | protocol bps (216..231) | data bps
        (232..247) | slashable (248) | 7 spare bits. Word B: fee (0..95) |
        model fee (96..191) | model id (192..255).
@dev The packers trust their caller for the field ranges (TaskEscrow checks
     them before packing): a value wider than its field would spill into the
     next one. The unpackers read their own field and nothing else.
"""


_DEADLINE_SHIFT: constant(uint256) = 160
_K_SHIFT: constant(uint256) = 200
_STATE_SHIFT: constant(uint256) = 208
_PBPS_SHIFT: constant(uint256) = 216
_DBPS_SHIFT: constant(uint256) = 232
_SLASHABLE_SHIFT: constant(uint256) = 248
_MODEL_FEE_SHIFT: constant(uint256) = 96
_MODEL_ID_SHIFT: constant(uint256) = 192
_MASK_8: constant(uint256) = 2**8 - 1
_MASK_16: constant(uint256) = 2**16 - 1
_MASK_40: constant(uint256) = 2**40 - 1
_MASK_160: constant(uint256) = 2**160 - 1
# @dev The widest fee and model fee (96 bits).
MAX_FEE: constant(uint256) = 2**96 - 1


# ------------------------------------------------------------------ word A


@internal
@pure
def _pack_a(requester: address, deadline: uint256, k: uint256, state: uint256, pbps: uint256, dbps: uint256, slashable: uint256) -> uint256:
    """
    @dev Word A of a task; `slashable` is 0 or 1.
    """
    return (
        convert(requester, uint256)
        | (deadline << _DEADLINE_SHIFT)
        | (k << _K_SHIFT)
        | (state << _STATE_SHIFT)
        | (pbps << _PBPS_SHIFT)
        | (dbps << _DBPS_SHIFT)
        | (slashable << _SLASHABLE_SHIFT)
    )


@internal
@pure
def _requester(a: uint256) -> address:
    return convert(convert(a & _MASK_160, uint160), address)


@internal
@pure
def _deadline(a: uint256) -> uint256:
    return (a >> _DEADLINE_SHIFT) & _MASK_40


@internal
@pure
def _k(a: uint256) -> uint256:
    return (a >> _K_SHIFT) & _MASK_8


@internal
@pure
def _state(a: uint256) -> uint256:
    return (a >> _STATE_SHIFT) & _MASK_8


@internal
@pure
def _with_state(a: uint256, state: uint256) -> uint256:
    """
    @dev Word A with its state field replaced by `state` (0..255).
    """
    return (a & ~(_MASK_8 << _STATE_SHIFT)) | (state << _STATE_SHIFT)


@internal
@pure
def _protocol_bps(a: uint256) -> uint256:
    return (a >> _PBPS_SHIFT) & _MASK_16


@internal
@pure
def _data_bps(a: uint256) -> uint256:
    return (a >> _DBPS_SHIFT) & _MASK_16


@internal
@pure
def _slashable(a: uint256) -> bool:
    return (a >> _SLASHABLE_SHIFT) & 1 == 1


# ------------------------------------------------------------------ word B


@internal
@pure
def _pack_b(fee: uint256, model_fee: uint256, model_id: uint256) -> uint256:
    return fee | (model_fee << _MODEL_FEE_SHIFT) | (model_id << _MODEL_ID_SHIFT)


@internal
@pure
def _fee(b: uint256) -> uint256:
    return b & MAX_FEE


@internal
@pure
def _model_fee(b: uint256) -> uint256:
    return (b >> _MODEL_FEE_SHIFT) & MAX_FEE


@internal
@pure
def _model_id(b: uint256) -> uint256:
    return b >> _MODEL_ID_SHIFT
