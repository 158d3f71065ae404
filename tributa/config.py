"""Settings shared by the oracle, the agents and the CLI.

Every value comes from an explicit argument, else a TRIBUTA_* environment variable,
else a default that works against a local Anvil node started by `make demo`. Folders default
to the current folder (.tributa/, deployments/), never to the package's source folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_CHAIN_ID = 31337


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    rpc_url: str = field(default_factory=lambda: _env("TRIBUTA_RPC_URL", "http://127.0.0.1:8545"))
    data_dir: Path = field(default_factory=lambda: Path(_env("TRIBUTA_DATA_DIR", ".tributa")))
    # The current folder's deployments/, as `ape run deploy` writes it (never the package's own
    # folder: an installed tributa has no deployments of its own).
    deployments_dir: Path = field(
        default_factory=lambda: Path(_env("TRIBUTA_DEPLOYMENTS", str(Path.cwd() / "deployments")))
    )
    oracle_url: str = field(default_factory=lambda: _env("TRIBUTA_ORACLE_URL", "http://127.0.0.1:8700"))
    # Blocks a log must be buried under before the oracle acts on it.
    confirmations: int = field(default_factory=lambda: int(_env("TRIBUTA_CONFIRMATIONS", "0")))
    # eth_getLogs range cap: public RPCs reject wide ranges.
    max_log_blocks: int = field(default_factory=lambda: int(_env("TRIBUTA_MAX_LOG_BLOCKS", "2000")))
    poll_interval_s: float = field(default_factory=lambda: float(_env("TRIBUTA_POLL_INTERVAL", "0.2")))

    def with_overrides(self, **overrides: object) -> Settings:
        """A copy with the given non-None fields replaced (CLI flags win over env)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        for key in ("data_dir", "deployments_dir"):
            if key in clean:
                clean[key] = Path(str(clean[key]))
        return replace(self, **clean)  # type: ignore[arg-type]

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"
