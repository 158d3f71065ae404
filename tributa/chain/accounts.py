"""Signing keys: from the environment, a keystore file, or (local chain only) Anvil's dev accounts.

Keys are never logged or printed; only addresses are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from tributa.config import LOCAL_CHAIN_ID
from tributa.errors import ConfigError, TributaError

# Anvil's public development mnemonic: these accounts hold test ETH on a local node only.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"

# Which dev account plays which part on a local chain (the demo and the tests use these).
DEV_ROLES = {
    "deployer": 0,
    "oracle": 1,
    "agent": 2,
    "agent2": 3,
    "requester": 4,
    "creator": 5,
    "publisher": 6,
    "buyer": 7,
    "buyer2": 8,
    "treasury": 9,
}
# Data contributors in the demo and tests: dev accounts 10.. (a local node funds 20 accounts).
FIRST_CONTRIBUTOR_INDEX = 10

Account.enable_unaudited_hdwallet_features()


def dev_account(role_or_index: str | int) -> LocalAccount:
    """A deterministic Anvil account by role name (see DEV_ROLES) or index."""
    if isinstance(role_or_index, str) and not role_or_index.isdigit():
        if role_or_index not in DEV_ROLES:
            raise ConfigError(f"unknown dev account {role_or_index!r}; use one of {', '.join(DEV_ROLES)} or an index")
        index = DEV_ROLES[role_or_index]
    else:
        index = int(role_or_index)
    return Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def load_account(spec: str | None, chain_id: int, default_role: str) -> LocalAccount:
    """Resolve an account spec.

    - ``env:NAME``: a hex private key in environment variable NAME;
    - ``keyfile:PATH``: an encrypted JSON keystore, password in TRIBUTA_KEY_PASSWORD;
    - ``dev:ROLE`` or ``dev:N``: an Anvil dev account (local chain only);
    - None: TRIBUTA_PRIVATE_KEY if set, else ``dev:<default_role>`` on a local chain.
    """
    if spec is None:
        if os.environ.get("TRIBUTA_PRIVATE_KEY"):
            spec = "env:TRIBUTA_PRIVATE_KEY"
        elif chain_id == LOCAL_CHAIN_ID:
            spec = f"dev:{default_role}"
        else:
            raise ConfigError(
                f"no account given for chain {chain_id}; pass --account env:VAR or --account keyfile:PATH"
            )
    kind, _, value = spec.partition(":")
    if kind == "dev":
        if chain_id != LOCAL_CHAIN_ID:
            raise ConfigError(f"dev accounts exist only on a local chain (31337), not chain {chain_id}")
        return dev_account(value or default_role)
    if kind == "env":
        key = os.environ.get(value, "").strip()
        if not key:
            raise ConfigError(f"environment variable {value} holds no private key")
        try:
            return Account.from_key(key)
        except (ValueError, TypeError):
            raise ConfigError(f"environment variable {value} is not a valid hex private key") from None
    if kind == "keyfile":
        path = Path(value)
        if not path.exists():
            raise ConfigError(f"keystore file {path} does not exist")
        password = os.environ.get("TRIBUTA_KEY_PASSWORD", "")
        try:
            decrypted = Account.decrypt(json.loads(path.read_text()), password)
        except (ValueError, KeyError):
            raise ConfigError(f"cannot decrypt {path}; set TRIBUTA_KEY_PASSWORD to its password") from None
        return Account.from_key(decrypted)
    raise ConfigError(f"account spec {spec!r} is not env:VAR, keyfile:PATH or dev:ROLE")


def checksum(address: str) -> str:
    """An address typed by a user, checksummed; anything else is one clear error."""
    try:
        return to_checksum_address(address)
    except (ValueError, TypeError):
        raise TributaError(f"{address!r} is not an Ethereum address (0x and 40 hex digits)") from None
