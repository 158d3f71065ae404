"""Stateless properties of contracts/modules/task_packing.vy, TaskEscrow's packed task
words (hypothesis, through tests/fuzzing/task_packing_harness.vy, which exposes each of
the module's internal functions).

Word A: requester (bits 0..159) | deadline (160..199) | k (200..207) | state (208..215)
| protocol bps (216..231) | data bps (232..247) | slashable (248) | 7 spare bits.
Word B: fee (0..95) | model fee (96..191) | model id (192..255). The properties, over
the full range of every field (extremes drawn often):

* packing puts each field at exactly its bits (the storage layout, checked against
  exact integers) and the unpackers give every field back;
* fields do not bleed: changing one field of a packed word changes what that field's
  unpacker reads and nothing any other unpacker reads, and each unpacker of an arbitrary
  256-bit word reads its own bits only;
* `_with_state` rewrites the state bits and nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

import boa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("task_packing_harness.vy")

# (shift, width) of every field; word A's slashable flag is one bit
A_FIELDS = {
    "requester": (0, 160),
    "deadline": (160, 40),
    "k": (200, 8),
    "state": (208, 8),
    "protocol_bps": (216, 16),
    "data_bps": (232, 16),
    "slashable": (248, 1),
}
B_FIELDS = {"fee": (0, 96), "model_fee": (96, 96), "model_id": (192, 64)}
A_ORDER = ("requester", "deadline", "k", "state", "protocol_bps", "data_bps", "slashable")
B_ORDER = ("fee", "model_fee", "model_id")

WORD = st.sampled_from([0, 2**256 - 1]) | st.integers(0, 2**256 - 1)
SETTINGS = settings(max_examples=200, deadline=None)

_HARNESS: list = []


@pytest.fixture(scope="module", autouse=True)
def _harness():
    old = os.getcwd()
    os.chdir(ROOT)  # `from contracts.modules import task_packing` resolves from the project root
    try:
        _HARNESS[:] = [boa.load(str(HARNESS))]
    finally:
        os.chdir(old)
    yield
    _HARNESS.clear()


def field(width: int):
    """Any value of a `width`-bit field, its extremes drawn often."""
    top = 2**width - 1
    return st.sampled_from([0, 1, top]) | st.integers(0, top)


def word_a():
    return st.fixed_dictionaries({n: field(w) for n, (_, w) in A_FIELDS.items()})


def word_b():
    return st.fixed_dictionaries({n: field(w) for n, (_, w) in B_FIELDS.items()})


def layout(fields: dict[str, int], spec: dict[str, tuple[int, int]]) -> int:
    return sum(fields[n] << shift for n, (shift, _) in spec.items())


def bits(word: int, shift: int, width: int) -> int:
    return (word >> shift) & (2**width - 1)


def address(value: int) -> str:
    return "0x" + value.to_bytes(20, "big").hex()


def pack_a(f: dict[str, int]) -> int:
    return _HARNESS[0].pack_a(address(f["requester"]), *(f[n] for n in A_ORDER[1:]))


def unpack_a(a: int) -> dict[str, int]:
    p = _HARNESS[0]
    out = {n: getattr(p, n)(a) for n in A_ORDER}
    out["requester"] = int(out["requester"], 16)
    out["slashable"] = int(out["slashable"])
    return out


def pack_b(f: dict[str, int]) -> int:
    return _HARNESS[0].pack_b(*(f[n] for n in B_ORDER))


def unpack_b(b: int) -> dict[str, int]:
    p = _HARNESS[0]
    return {n: getattr(p, n)(b) for n in B_ORDER}


def assert_only_changed(pack, unpack, f: dict[str, int], g: dict[str, int], which: str) -> None:
    """Packing `g` (`f` with `which` redrawn) reads back `which` as drawn and every other field as in `f`."""
    before, after = unpack(pack(f)), unpack(pack(g))
    assert after[which] == g[which]
    assert {n: v for n, v in after.items() if n != which} == {n: v for n, v in before.items() if n != which}


# ------------------------------------------------------------------ word A


@SETTINGS
@given(f=word_a())
def test_word_a__any_fields__packs_to_the_layout_and_round_trips(f):
    a = pack_a(f)
    assert a == layout(f, A_FIELDS)
    assert a >> 249 == 0  # the 7 spare bits stay clear
    assert unpack_a(a) == f


@SETTINGS
@given(f=word_a(), which=st.sampled_from(A_ORDER), data=st.data())
def test_word_a__changing_one_field__changes_only_that_field(f, which, data):
    g = dict(f)
    g[which] = data.draw(field(A_FIELDS[which][1]))
    assert_only_changed(pack_a, unpack_a, f, g, which)


@SETTINGS
@given(a=WORD)
def test_word_a__unpackers_of_any_word__read_their_own_bits_only(a):
    assert unpack_a(a) == {n: bits(a, s, w) for n, (s, w) in A_FIELDS.items()}


@SETTINGS
@given(a=WORD, state=field(8))
def test_with_state__any_word__rewrites_the_state_bits_only(a, state):
    out = _HARNESS[0].with_state(a, state)
    mask = 0xFF << 208
    assert out & ~mask == a & ~mask
    assert bits(out, 208, 8) == state == _HARNESS[0].state(out)


# ------------------------------------------------------------------ word B


@SETTINGS
@given(f=word_b())
def test_word_b__any_fields__packs_to_the_layout_and_round_trips(f):
    b = pack_b(f)
    assert b == layout(f, B_FIELDS)
    assert unpack_b(b) == f


@SETTINGS
@given(f=word_b(), which=st.sampled_from(B_ORDER), data=st.data())
def test_word_b__changing_one_field__changes_only_that_field(f, which, data):
    g = dict(f)
    g[which] = data.draw(field(B_FIELDS[which][1]))
    assert_only_changed(pack_b, unpack_b, f, g, which)


@SETTINGS
@given(b=WORD)
def test_word_b__unpackers_of_any_word__read_their_own_bits_only(b):
    assert unpack_b(b) == {n: bits(b, s, w) for n, (s, w) in B_FIELDS.items()}


def test_max_fee__is_the_96_bit_field():
    assert _HARNESS[0].max_fee() == 2**96 - 1
