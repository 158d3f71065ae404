"""`tributa imo launch`: each bound of the launcher is checked before anything is sent, and
the one-line error names the limit."""

from __future__ import annotations

import pytest

from tests.cli.test_cli_errors import assert_one_line_error, run_cli
from tests.helpers import register_test_model, signer_for


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ({"--hard-cap": "90"}, ["hard cap exceeds tokens for sale (max 800,000", "the hard cap buys 900,000"]),
        ({"--soft-cap": "70"}, ["soft cap is above the hard cap (max 60 ETH)"]),
        ({"--publisher-share-bps": "9500"}, ["publisher share is too high (max 9,000 bps)"]),
        ({"--redeem-share-bps": "6000"}, ["redeem share is too high (max 5,000 bps)"]),
        ({"--duration-s": str(400 * 86_400)}, ["sale duration must be 1..31,536,000 s"]),
        ({"--vesting-s": str(11 * 365 * 86_400)}, ["vesting is too long (max 315,360,000 s)"]),
        ({"--price": "2", "--hard-cap": "1wei", "--soft-cap": "0"}, ["hard cap buys no tokens at this price (min 2 ETH)"]),
    ],
)
def test_imo_launch__out_of_bounds__one_line_naming_the_limit_and_nothing_sent(
    fresh_settings, contracts, chain_snapshot, overrides, fragments
):
    publisher = signer_for(contracts, "publisher")
    model = register_test_model(contracts, publisher)
    nonce = contracts.w3.eth.get_transaction_count(publisher.address)
    options = {"--model": str(model), "--name": "Tiny", "--symbol": "TNY", "--supply": "1000000",
               "--price": "0.0001", "--soft-cap": "20", "--hard-cap": "60", "--publisher-share-bps": "2000"}
    options.update(overrides)
    args = [x for pair in options.items() for x in pair]
    result = run_cli(fresh_settings, "imo", "launch", *args, "--account", "dev:publisher")
    assert_one_line_error(result, *fragments)
    assert contracts.w3.eth.get_transaction_count(publisher.address) == nonce
