"""Gas figures (titanoboa, approximating a transaction: cold access lists, plus
21000 + calldata intrinsic gas, minus capped refunds) and the gas targets:

* settle costs the same whatever the number of a dataset's contributors;
* settle_batch costs at most half a single settle per task;
* a royalty claim (one dataset, 10 contributors) costs at most 80,000 gas.

Run with `-s` to see the table. The authoritative figures come from Anvil
receipts (`make bench`); these track them closely.
"""

import boa
import pytest

from tests.contracts import helpers as h

FIGURES: dict[str, int] = {}
LAST_EXECUTION: list[int] = [0]  # execution gas (no intrinsic) of the last tx_gas call


def tx_gas(contract, fn_name: str, *args, sender: str, value: int = 0) -> int:
    """Runs contract.fn(*args) as `sender` from a cold access list; returns tx gas."""
    fn = getattr(contract, fn_name)
    calldata = fn.prepare_calldata(*args)
    # forget warm accounts and slots (journaled, so boa anchors still revert cleanly)
    boa.env.evm.vm.state._account_db._journal_accessed_state.clear()
    with boa.env.prank(sender):
        fn(*args, value=value)
    comp = contract._computation
    LAST_EXECUTION[0] = comp.get_gas_used()
    used = h.intrinsic_gas(calldata) + comp.get_gas_used()
    return used - min(comp.get_gas_refund(), used // 5)


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if FIGURES:
        width = max(map(len, FIGURES))
        print("\n" + "\n".join(f"{k:<{width}}  {v:>10,}" for k, v in FIGURES.items()))


def test_gas__settle__is_flat_in_contributors_and_batch_is_cheaper(w):
    one = h.register_dataset(w.registry, w.data_owner, 1, label="one")[0]
    thousand = h.register_dataset(w.registry, w.data_owner, 1000, label="thousand")[0]
    agent = w.agents[0]
    tids = [h.post_task(w.escrow, w.requester, k=1) for _ in range(55)]
    FIGURES["post_task"] = tx_gas(
        w.escrow,
        "post_task",
        1,
        h.digest("in"),
        boa.env.timestamp + h.DAY,
        1,
        w.model_fee,
        sender=w.requester,
        value=10**16,
    )

    def s(tid, dataset):
        return h.settlement(
            tid, agents=[agent], agent_fee=10**15, dataset_ids=[dataset], weights=[10_000], escrow=w.escrow
        )

    # warm-up: every escrow balance becomes non-zero
    FIGURES["settle (first ever: fresh balances)"] = tx_gas(
        w.escrow, "settle", s(tids.pop(), w.dataset_small[0]), sender=w.oracle
    )
    # first settlement into each dataset (revenue slot zero -> non-zero in both)
    FIGURES["settle (1-contributor dataset)"] = tx_gas(w.escrow, "settle", s(tids[0], one), sender=w.oracle)
    exec_one = LAST_EXECUTION[0]
    FIGURES["settle (1000-contributor dataset)"] = tx_gas(w.escrow, "settle", s(tids[1], thousand), sender=w.oracle)
    # identical execution; the totals may differ by a few gas of calldata
    # (the signatures' zero bytes differ)
    assert exec_one == LAST_EXECUTION[0]

    # steady state: every balance already non-zero
    g_single = tx_gas(w.escrow, "settle", s(tids[2], one), sender=w.oracle)
    FIGURES["settle (k=1, 1 dataset, steady state)"] = g_single
    batch = [s(t, one) for t in tids[3:53]]
    g_batch = tx_gas(w.escrow, "settle_batch", batch, sender=w.oracle)
    FIGURES["settle_batch of 50"] = g_batch
    FIGURES["settle_batch per task"] = g_batch // 50
    assert all(w.escrow.task(t)[7] == h.SETTLED for t in tids[3:53])
    assert g_batch / 50 <= 0.5 * g_single

    # refund and withdraw
    boa.env.time_travel(seconds=2 * h.DAY)
    FIGURES["refund"] = tx_gas(w.escrow, "refund", tids[53], sender=w.stranger)
    FIGURES["withdraw"] = tx_gas(w.escrow, "withdraw", sender=w.requester)
    assert w.escrow.balance_of(w.requester) == 0


def test_gas__claim_with_ten_contributors__is_at_most_80k(w):
    did, c, s = w.dataset_ten
    tids = [h.post_task(w.escrow, w.requester) for _ in range(2)]
    with boa.env.prank(w.oracle):
        for t in tids:
            w.escrow.settle(h.settlement(t, dataset_ids=[did], weights=[10_000]))
    i = 4
    boa.env.set_balance(c[i], 10**18)  # a claimer pays for gas, so its account exists
    proof = h.proof_for(c, s, c[i])
    g = tx_gas(w.vault, "claim", did, 1, s[i], proof, sender=c[i])
    FIGURES["claim (10 contributors)"] = g
    assert w.vault.claimed(did, 1, c[i], s[i], proof[:1]) > 0
    assert g <= 80_000


def test_gas__register_dataset_with_ten_contributors(w):
    addrs = [boa.env.generate_address() for _ in range(10)]
    from tributa.merkle import sort_contributors

    c, s = sort_contributors(zip(addrs, [1000] * 10, strict=False))
    salt = b"\x5a" * 32
    commitment = w.registry.dataset_commitment(h.digest("gas-ds"), h.digest("meta"), w.data_owner, salt)
    g_commit = tx_gas(w.registry, "commit_dataset", commitment, sender=w.data_owner)
    boa.env.time_travel(blocks=1)
    g = tx_gas(
        w.registry,
        "register_dataset",
        h.digest("gas-ds"),
        h.digest("meta"),
        c,
        s,
        "CC-BY-4.0",
        salt,
        sender=w.data_owner,
    )
    FIGURES["commit_dataset"] = g_commit
    FIGURES["register_dataset (reveal, 10 contributors)"] = g
    FIGURES["commit + register_dataset (10 contributors)"] = g_commit + g
    assert w.registry.dataset_id_of(h.digest("gas-ds")) != 0
