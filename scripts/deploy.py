"""Deploy Tributa's contracts with ape and write deployments/<chain_id>.json.

    ape run deploy                                   # local Anvil node (ape-config.yaml)
    ape run deploy --network ethereum:sepolia:node --account my-ape-alias --oracle 0x… --treasury 0x…

With --account the plan is shown and confirmed once (--yes: not asked), then the key is unlocked
for all of the deploy's transactions instead of a signing prompt for each.

The deployments file holds addresses, ABIs, the chain id and the deploy block; the
oracle, the agents and the CLI read it, so no address is pasted by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from ape import accounts, chain, project
from ape.cli import ConnectedProviderCommand

from tributa.chain.accounts import DEV_ROLES
from tributa.config import LOCAL_CHAIN_ID, Settings
from tributa.deployments import Deployment, deployment_path, save_deployment

DEFAULTS = {
    "protocol_fee_bps": 500,  # 5% of each task fee to the treasury
    "data_share_bps": 2000,  # 20% of each task fee to the data contributors
    "slash_bps": 1000,  # an agent in the minority loses 10% of its stake
    "min_stake": 10**17,  # 0.1 ETH
    "unbonding_delay": 31 * 24 * 3600,  # TaskEscrow.MIN_UNBONDING_DELAY: a task's slash window
}
# AIOracle (contracts that ask for AI, docs/AI_ORACLE.md); the owner retunes them with set_params.
AI_ORACLE_DEFAULTS = {
    "gas_price": 10**9,  # 1 gwei per gas of callback gas
    "agent_fee": 10**15,  # 0.001 ETH per request to the agents
    "challenge_bond": 10**16,  # 0.01 ETH
    "response_window": 600,  # seconds the oracle has to post a result
    "committee_window": 3600,  # seconds a challenge's committee has to sign its verdicts
}
# AICommittee: the least deposit of a roster member; a silent member loses half (docs/AI_ORACLE.md).
COMMITTEE_MEMBER_DEPOSIT = 10**16  # 0.01 ETH


def _deployer(account_alias: str | None):
    if account_alias:
        return accounts.load(account_alias)
    if chain.chain_id != LOCAL_CHAIN_ID:
        raise click.UsageError("on a non-local network pass --account ALIAS (an ape account: `ape accounts import`)")
    return accounts.test_accounts[DEV_ROLES["deployer"]]


def _refuse_to_replace_a_live_deployment(deployments_dir: Path) -> None:
    """Everything reads deployments/<chain_id>.json: replacing it points every role at new, empty
    contracts. A file whose escrow has no code any more (a restarted Anvil) is replaced freely."""
    path = deployment_path(deployments_dir, chain.chain_id)
    if not path.exists():
        return
    try:
        escrow = json.loads(path.read_text())["addresses"]["TaskEscrow"]
    except (ValueError, KeyError, TypeError):
        raise click.UsageError(f"{path} exists and is not a deployment file; move it away or pass --force") from None
    if chain.provider.get_code(escrow):
        raise click.UsageError(
            f"{path} already names a live deployment on chain {chain.chain_id} (TaskEscrow {escrow}); "
            "pass --force to replace it, or --deployments-dir to write elsewhere"
        )


DEPLOY_TRANSACTIONS = 12  # 7 contracts (one a blueprint declare), then 5 wiring calls


def _confirm_once(deployer, oracle: str, treasury: str, yes: bool, **params) -> None:
    """One confirmation for the whole deploy, then the key unlocked for its transactions (ape
    would otherwise ask to sign each of the 12)."""
    click.echo(
        f"chain {chain.chain_id}: {DEPLOY_TRANSACTIONS} transactions from {deployer.address} "
        f"(balance {deployer.balance / 10**18:.6f} ETH)"
    )
    click.echo(f"  oracle {oracle}, treasury {treasury}")
    click.echo("  " + ", ".join(f"{name} {value}" for name, value in params.items()))
    if not yes:
        click.confirm("send them?", abort=True)
    deployer.set_autosign(True)  # asks for the passphrase once (or reads APE_ACCOUNTS_<alias>_PASSPHRASE)


def _local_role(role: str) -> str:
    return accounts.test_accounts[DEV_ROLES[role]].address


@click.command(cls=ConnectedProviderCommand)
@click.option("--account", "account_alias", default=None, help="ape account alias (required off the local chain)")
@click.option("--oracle", default=None, help="the oracle's address (default: the local dev oracle account)")
@click.option("--treasury", default=None, help="where protocol fees go (default: the local dev treasury account)")
@click.option("--protocol-fee-bps", type=int, default=DEFAULTS["protocol_fee_bps"], show_default=True)
@click.option("--data-share-bps", type=int, default=DEFAULTS["data_share_bps"], show_default=True)
@click.option("--slash-bps", type=int, default=DEFAULTS["slash_bps"], show_default=True)
@click.option("--min-stake", type=int, default=DEFAULTS["min_stake"], show_default=True, help="wei")
@click.option("--unbonding-delay", type=int, default=DEFAULTS["unbonding_delay"], show_default=True, help="seconds")
@click.option("--deployments-dir", type=click.Path(path_type=Path), default=None)
@click.option("--force", is_flag=True, help="replace an existing deployments/<chain_id>.json whose contracts are live")
@click.option(
    "--yes",
    is_flag=True,
    help="with --account: send without asking (the passphrase still comes from a prompt "
    "or APE_ACCOUNTS_<ALIAS>_PASSPHRASE)",
)
def cli(
    account_alias,
    oracle,
    treasury,
    protocol_fee_bps,
    data_share_bps,
    slash_bps,
    min_stake,
    unbonding_delay,
    deployments_dir,
    force,
    yes,
):
    deployments_dir = deployments_dir or Settings().deployments_dir
    if not force:
        _refuse_to_replace_a_live_deployment(deployments_dir)
    deployer = _deployer(account_alias)
    local = chain.chain_id == LOCAL_CHAIN_ID
    if not local and not (oracle and treasury):
        raise click.UsageError("on a non-local network pass --oracle and --treasury explicitly")
    oracle = oracle or _local_role("oracle")
    treasury = treasury or _local_role("treasury")
    if account_alias:
        _confirm_once(
            deployer,
            oracle,
            treasury,
            yes,
            protocol_fee_bps=protocol_fee_bps,
            data_share_bps=data_share_bps,
            slash_bps=slash_bps,
            min_stake=min_stake,
            unbonding_delay=unbonding_delay,
        )
    start_block = chain.blocks.head.number

    click.echo(f"deploying to chain {chain.chain_id} from {deployer.address}")
    registry = deployer.deploy(project.DataRegistry)
    vault = deployer.deploy(project.RoyaltyVault, registry.address)
    escrow = deployer.deploy(
        project.TaskEscrow,
        registry.address,
        vault.address,
        treasury,
        protocol_fee_bps,
        data_share_bps,
        slash_bps,
        min_stake,
        unbonding_delay,
    )
    vault.set_escrow(escrow.address, sender=deployer)
    escrow.set_oracle(oracle, True, sender=deployer)
    # ape builds the EIP-5202 declare tx without a sender unless told (then gas estimation fails).
    blueprint = deployer.declare(project.ModelToken, sender=deployer).contract_address
    launcher = deployer.deploy(project.IMOLauncher, registry.address, blueprint)
    registry.set_imo_launcher(launcher.address, sender=deployer)
    committee = deployer.deploy(project.AICommittee, escrow.address, COMMITTEE_MEMBER_DEPOSIT)
    ai_oracle = deployer.deploy(project.AIOracle, escrow.address, committee.address, *AI_ORACLE_DEFAULTS.values())
    committee.bind(ai_oracle.address, sender=deployer)
    escrow.set_oracle(ai_oracle.address, True, sender=deployer)  # it settles only the tasks it posted

    contracts = {
        "DataRegistry": registry,
        "RoyaltyVault": vault,
        "TaskEscrow": escrow,
        "IMOLauncher": launcher,
        "AICommittee": committee,
        "AIOracle": ai_oracle,
    }
    abis = {
        name: [entry.model_dump(mode="json", by_alias=True) for entry in c.contract_type.abi]
        for name, c in contracts.items()
    }
    abis["ModelToken"] = [
        entry.model_dump(mode="json", by_alias=True) for entry in project.ModelToken.contract_type.abi
    ]
    addresses = {name: c.address for name, c in contracts.items()}
    addresses["ModelTokenBlueprint"] = blueprint
    deployment = Deployment(
        chain_id=chain.chain_id,
        block_number=start_block,
        addresses=addresses,
        abis=abis,
        deployer=deployer.address,
        oracle=oracle,
        treasury=treasury,
    )
    path = save_deployment(deployments_dir, deployment)
    for name, address in addresses.items():
        click.echo(f"  {name:<20} {address}")
    click.echo(f"wrote {path}")
