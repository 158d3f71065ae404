"""Small formatting helpers for CLI output."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import click
from web3 import Web3

from tributa.errors import TributaError

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar


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
    except Exception:  # noqa: BLE001
        raise NotAnAmount(f"{text!r} is not an ETH amount (e.g. 0.01 or 5000wei)") from None


def hex32(data: bytes) -> str:
    return "0x" + bytes(data).hex()


# --json: one document on stdout for every read command. Amounts of wei (and of token base units)
# are decimal strings, as JSON numbers lose precision above 2**53; ids, bps, counts, block numbers
# and timestamps are numbers; bytes are 0x-hex; addresses are checksummed (as web3 returns them).
json_option = click.option(
    "--json", "as_json", is_flag=True, help="print one JSON document on stdout (wei amounts as strings)"
)


def wei(amount: int | None) -> str | None:
    """An amount of wei (or token base units) as --json prints it."""
    return None if amount is None else str(int(amount))


def _json_value(value):
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no --json form")  # a field left unconverted: a bug, not a guess


def emit_json(document) -> None:
    click.echo(json.dumps(document, indent=2, default=_json_value))


PROGRESS_MIN_BYTES = 8 << 20  # smaller work finishes before a bar would help


def progress_bar(label: str, quiet: bool = False):
    """A (done, total) byte-progress callback drawing a bar on stderr for large work, or None
    with --quiet; stdout stays for the command's result."""
    if quiet:
        return None
    bar: ProgressBar[int] | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if total < PROGRESS_MIN_BYTES:
            return
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"))
            bar.__enter__()
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)

    return update


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="nothing on stderr but errors and prompts (no progress)"
)
