"""How the transaction manager bumps fees and waits: one frozen TxPolicy per manager."""

from __future__ import annotations

from dataclasses import dataclass

# A replacement must raise both fees by at least this much: geth refuses one under +10%, and
# bumps start above that margin so rounding never lands a replacement just short of it.
MIN_BUMP_BPS = 1250


@dataclass(frozen=True)
class TxPolicy:
    """When to bump, by how much, and how long to wait."""

    bump_after_s: float = 30.0
    bump_after_blocks: int = 3  # 0: bump on time only
    bump_bps: int = MIN_BUMP_BPS  # +12.5%: above geth's 10% replacement rule
    max_fee_per_gas: int | None = None  # a cap in wei; bumping stops there
    wait_timeout_s: float = 120.0
    poll_s: float = 0.05  # first receipt poll; grows to 1 s
    outage_grace_s: float = 5.0  # how long wait() rides out an unreachable node before giving up
    gas_margin_pct: int = 20  # estimate * 1.2 + gas_extra
    gas_extra: int = 10_000
    legacy: bool = False  # force gasPrice transactions (chosen anyway when blocks have no base fee)
