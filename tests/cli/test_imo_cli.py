"""`tributa imo launch`: each bound of the launcher is checked before anything is sent, and
the one-line error names the limit."""

from __future__ import annotations

import pytest

from tests.cli.test_cli_errors import assert_one_line_error, run_cli
from tests.helpers import advance_time, register_test_model, signer_for


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ({"--hard-cap": "90"}, ["hard cap exceeds tokens for sale (max 800,000", "the hard cap buys 900,000"]),
        ({"--soft-cap": "70"}, ["soft cap is above the hard cap (max 60 ETH)"]),
        ({"--publisher-share-bps": "9500"}, ["publisher share is too high (max 9,000 bps)"]),
        ({"--redeem-share-bps": "6000"}, ["redeem share is too high (max 5,000 bps)"]),
        ({"--duration-s": str(400 * 86_400)}, ["sale duration must be 1..31,536,000 s"]),
        ({"--vesting-s": str(11 * 365 * 86_400)}, ["vesting is too long (max 315,360,000 s)"]),
        (
            {"--price": "2", "--hard-cap": "1wei", "--soft-cap": "0"},
            ["hard cap buys no tokens at this price (min 2 ETH)"],
        ),
    ],
)
def test_imo_launch__out_of_bounds__one_line_naming_the_limit_and_nothing_sent(
    fresh_settings, contracts, chain_snapshot, overrides, fragments
):
    publisher = signer_for(contracts, "publisher")
    model = register_test_model(contracts, publisher)
    nonce = contracts.w3.eth.get_transaction_count(publisher.address)
    options = {
        "--model": str(model),
        "--name": "Tiny",
        "--symbol": "TNY",
        "--supply": "1000000",
        "--price": "0.0001",
        "--soft-cap": "20",
        "--hard-cap": "60",
        "--publisher-share-bps": "2000",
    }
    options.update(overrides)
    args = [x for pair in options.items() for x in pair]
    result = run_cli(fresh_settings, "imo", "launch", *args, "--account", "dev:publisher")
    assert_one_line_error(result, *fragments)
    assert contracts.w3.eth.get_transaction_count(publisher.address) == nonce


def test_imo_status_and_money_exits__end_time_then_ended_not_finalized__excess_proceeds_and_vesting_paid_out(
    fresh_settings, contracts, chain_snapshot
):
    w3 = contracts.w3
    publisher, buyer = signer_for(contracts, "publisher"), signer_for(contracts, "buyer")
    model = register_test_model(contracts, publisher)
    launched = run_cli(
        fresh_settings,
        "imo",
        "launch",
        "--model",
        str(model),
        "--name",
        "Tiny",
        "--symbol",
        "TNY",
        "--supply",
        "1000000",
        "--price",
        "0.0001",
        "--soft-cap",
        "20",
        "--hard-cap",
        "60",
        "--duration-s",
        "3600",
        "--vesting-s",
        "86400",
        "--account",
        "dev:publisher",
    )
    assert launched.exit_code == 0, launched.output
    imo_id = launched.output.split("IMO ")[1].split()[0]
    assert (
        "bought 250,000 tokens"
        in run_cli(fresh_settings, "imo", "buy", imo_id, "--eth", "25", "--account", "dev:buyer").output
    )
    assert_one_line_error(
        run_cli(fresh_settings, "imo", "withdraw-excess", "--account", "dev:buyer"), "has no excess to withdraw"
    )
    assert_one_line_error(
        run_cli(fresh_settings, "imo", "withdraw-proceeds", imo_id, "--account", "dev:publisher"),
        "is active, not succeeded",
    )

    active = run_cli(fresh_settings, "imo", "status", imo_id).output
    assert "active, sale ends " in active and ("(in 1h 0m)" in active or "(in 59m" in active), active
    assert "sold 250,000 of 800,000 tokens" in active and "e+" not in active, active

    over_cap = run_cli(fresh_settings, "imo", "buy", imo_id, "--eth", "40", "--account", "dev:buyer")
    assert "bought 350,000 tokens" in over_cap.output, over_cap.output  # the hard cap of 60 ETH takes 35 of the 40
    before = w3.eth.get_balance(buyer.address)
    excess = run_cli(fresh_settings, "imo", "withdraw-excess", "--account", "dev:buyer")
    assert "withdrew 5 ETH of excess" in excess.output, excess.output
    assert w3.eth.get_balance(buyer.address) > before + 49 * 10**17  # 5 ETH less gas

    advance_time(w3, 3601)
    ended = run_cli(fresh_settings, "imo", "status", imo_id).output
    assert f"not finalized (anyone may `tributa imo finalize {imo_id}`)" in ended, ended

    assert run_cli(fresh_settings, "imo", "finalize", imo_id, "--account", "dev:buyer").exit_code == 0
    final = run_cli(fresh_settings, "imo", "status", imo_id).output
    assert ": succeeded (sale ended " in final, final
    assert_one_line_error(
        run_cli(fresh_settings, "imo", "withdraw-proceeds", imo_id, "--account", "dev:buyer"), "not by " + buyer.address
    )

    before = w3.eth.get_balance(publisher.address)
    proceeds = run_cli(fresh_settings, "imo", "withdraw-proceeds", imo_id, "--account", "dev:publisher")
    assert f"withdrew the 60 ETH IMO {imo_id} raised" in proceeds.output, proceeds.output
    assert w3.eth.get_balance(publisher.address) > before + 59 * 10**18
    assert_one_line_error(
        run_cli(fresh_settings, "imo", "withdraw-proceeds", imo_id, "--account", "dev:publisher"), "already withdrawn"
    )

    advance_time(w3, 43200)  # half the vesting
    vested = run_cli(fresh_settings, "imo", "claim-vested", imo_id, "--account", "dev:publisher")
    assert vested.exit_code == 0 and "vested tokens of IMO" in vested.output and "still vesting" in vested.output, (
        vested.output
    )
    assert run_cli(fresh_settings, "imo", "claim", imo_id, "--account", "dev:buyer").exit_code == 0
    holders = run_cli(fresh_settings, "imo", "status", imo_id).output
    assert f"holder {publisher.address} (publisher): " in holders, holders
    assert f"holder {buyer.address}: 600,000 tokens" in holders, holders
