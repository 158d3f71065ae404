"""Small formatting helpers for CLI output."""

from __future__ import annotations

import time
from decimal import Decimal

from web3 import Web3

from tributa.errors import TributaError


def eth(wei: int | None) -> str:
    if wei is None:
        return "-"
    value = Decimal(wei) / Decimal(10**18)
    return f"{value.normalize():f} ETH" if wei else "0 ETH"


def utc_time(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


class NotAnAmount(TributaError, ValueError):
    """Text given for an ETH amount that is not one (the CLI prints it as one line)."""


def parse_eth(text: str) -> int:
    """'0.01' or '0.01eth' or '12345wei' -> wei."""
    text = text.strip().lower()
    try:
        if text.endswith("wei"):
            return int(text[:-3])
        return int(Web3.to_wei(Decimal(text.removesuffix("eth")), "ether"))
    except Exception:
        raise NotAnAmount(f"{text!r} is not an ETH amount (e.g. 0.01 or 5000wei)") from None


def hex32(data: bytes) -> str:
    return "0x" + bytes(data).hex()
