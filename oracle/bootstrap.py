"""The oracle's wiring: from settings, a bound deployment and the oracle's key to a runnable Oracle
(its attributor and re-executor included), checking first what would stop it later."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from oracle.service import Oracle, OracleOptions
from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer
from tributa.config import Settings
from tributa.errors import TributaError


def check_oracle_key(contracts: Contracts, signer: Signer) -> None:
    """TributaError unless `signer` holds the escrow's oracle role."""
    escrow = contracts.escrow
    if not escrow.functions.is_oracle(signer.address).call():
        raise TributaError(
            f"account {signer.address} is not an oracle of the escrow at {escrow.address}: run with the oracle's "
            "key (--account), or have the escrow's owner add this one"
        )


def build_oracle(
    settings: Settings,
    contracts: Contracts,
    store,
    signer: Signer,
    options: OracleOptions,
    attribution: bool = True,
    model_dirs: Sequence[Path] = (),
) -> Oracle:
    """The oracle, with attribution unless told not, and re-execution on `model_dirs` (in the
    agents' own bwrap workers, so an honest agent's bytes match the oracle's)."""
    if options.spot_check_fraction and not model_dirs:
        raise TributaError("--spot-check-fraction needs the models to re-run: give --model-dir")
    attributor = None
    if attribution:
        from oracle.attribution.service import build_attributor

        attributor = build_attributor(settings, contracts, store)
    reexecute = None
    if model_dirs:
        from oracle.reexecute import Reexecutor
        from tributa.runtime import bwrap
        from tributa.runtime.sandbox import SandboxedExecutor

        if bwrap.bwrap_path() is None:
            raise TributaError(
                "re-execution (--model-dir) runs models in bubblewrap, which is not installed: apt-get install bubblewrap"
            )
        reexecute = Reexecutor(
            contracts, store, list(model_dirs), SandboxedExecutor(), oracle_key=bytes(signer.account.key)
        )
    return Oracle(settings, contracts, signer, options, attributor, reexecute)
