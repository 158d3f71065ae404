"""`tributa agent stake add`, `agent unbond`, `agent withdraw-stake`: an agent's stake in and
out of the escrow, each mistake one line with nothing sent."""

from __future__ import annotations

from tests.cli.test_cli_errors import assert_one_line_error, run_cli
from tests.helpers import advance_time, ensure_agent, register_test_model, signer_for


def test_agent_stake__add_unbond_wait_withdraw__the_whole_stake_comes_back(fresh_settings, contracts, chain_snapshot):
    w3, escrow = contracts.w3, contracts.escrow.functions
    agent = signer_for(contracts, "agent")
    nonce = w3.eth.get_transaction_count(agent.address)
    assert_one_line_error(
        run_cli(fresh_settings, "agent", "stake", "add", "--eth", "1", "--account", "dev:agent"),
        "is not a registered agent",
    )
    assert w3.eth.get_transaction_count(agent.address) == nonce
    ensure_agent(contracts, agent, [register_test_model(contracts, signer_for(contracts, "publisher"))])
    minimum = escrow.min_stake().call()

    added = run_cli(fresh_settings, "agent", "stake", "add", "--eth", "1", "--account", "dev:agent")
    assert added.exit_code == 0 and "stake of" in added.output, added.output
    bonded = escrow.agent(agent.address).call().stake
    assert bonded == minimum + 10**18

    nonce = w3.eth.get_transaction_count(agent.address)
    assert_one_line_error(
        run_cli(fresh_settings, "agent", "withdraw-stake", "--account", "dev:agent"), "has no stake unbonding"
    )
    assert_one_line_error(
        run_cli(fresh_settings, "agent", "unbond", "--eth", f"{bonded + 1}wei", "--account", "dev:agent"),
        "more than the bonded stake",
    )
    assert_one_line_error(
        run_cli(fresh_settings, "agent", "unbond", "--eth", f"{bonded - 1}wei", "--account", "dev:agent"),
        "below the minimum stake",
    )
    assert_one_line_error(
        run_cli(fresh_settings, "agent", "stake", "add", "--eth", "lots", "--account", "dev:agent"),
        "is not an ETH amount",
    )
    assert w3.eth.get_transaction_count(agent.address) == nonce

    partial = run_cli(fresh_settings, "agent", "unbond", "--eth", "1", "--account", "dev:agent")
    assert partial.exit_code == 0 and "unbonding 1 ETH" in partial.output, partial.output
    everything = run_cli(fresh_settings, "agent", "unbond", "--account", "dev:agent")
    assert everything.exit_code == 0 and "agent withdraw-stake` from" in everything.output, everything.output
    assert_one_line_error(
        run_cli(fresh_settings, "agent", "withdraw-stake", "--account", "dev:agent"), "is still unbonding"
    )

    advance_time(w3, escrow.unbonding_delay().call())
    before = w3.eth.get_balance(agent.address)
    withdrawn = run_cli(fresh_settings, "agent", "withdraw-stake", "--account", "dev:agent")
    assert withdrawn.exit_code == 0 and "of stake to" in withdrawn.output, withdrawn.output
    stake, unbonding = escrow.agent(agent.address).call()[:2]
    assert (stake, unbonding) == (0, 0)
    assert w3.eth.get_balance(agent.address) > before + bonded - 10**16  # all of it, less gas
