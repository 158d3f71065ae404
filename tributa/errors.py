"""User-facing errors: each says what went wrong and what to do, in one line."""


class TributaError(Exception):
    """An error the CLI prints as one line (no traceback) before exiting non-zero."""


class ConfigError(TributaError):
    """Missing or invalid configuration (RPC URL, deployment file, key)."""


class ChainError(TributaError):
    """The RPC node is unreachable or answered with an error."""


class ContractRevert(ChainError):
    """A transaction or call reverted; `reason` is the contract's revert string."""

    def __init__(self, reason: str, action: str = "transaction") -> None:
        self.reason = reason
        super().__init__(f"{action} reverted: {reason}")


class InsufficientFunds(ChainError):
    """The sending account cannot pay for value + gas."""
