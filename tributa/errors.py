"""User-facing errors: each says what went wrong and what to do, in one line.

Every exception class the project defines sits under TributaError (tests/test_error_hierarchy.py
checks it), with the builtin it specialises as its second base (`class SandboxError(TributaError,
RuntimeError)`), so the CLI's one-line handler catches them all and `except ValueError` sites
still do too."""


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


class ModelFeeAboveMax(ContractRevert):
    """post_task refused: the model's fee rose above the most the requester accepted."""

    REASON = "escrow: model fee above max"

    def __init__(self, model_fee: int | None, max_model_fee: int) -> None:
        self.model_fee = model_fee
        self.max_model_fee = max_model_fee
        super().__init__(self.REASON, "post_task")
        rose = f"model fee rose to {_eth(model_fee)}" if model_fee is not None else "the model fee rose"
        self.args = (
            f"{rose}, above your max {_eth(max_model_fee)}; post again (or pass --max-model-fee) to accept it",
        )

    def __str__(self) -> str:
        return self.args[0]


def _eth(wei: int) -> str:
    from decimal import Decimal

    return f"{(Decimal(wei) / Decimal(10**18)).normalize():f} ETH" if wei else "0 ETH"
