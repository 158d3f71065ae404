"""`tributa oracle run`'s transaction policy options (--tx-*, --confirmations): bad values are
refused before anything starts; good ones reach the oracle's transaction manager."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from oracle.jobs import ACCEPT_WINDOW_S
from oracle.txmanager import TxPolicy
from tests.cli.test_cli_errors import run_cli
from tributa.cli import cli


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--tx-bump-pct", "10", "10 is not between 12.5 and 100: a replacement must raise the fees by at least 12.5%"),
        ("--tx-bump-pct", "1250", "1250 is not between 12.5 and 100"),
        ("--tx-bump-pct", "nan", "nan is not between 12.5 and 100"),
        ("--tx-bump-after-s", "-1", "-1.0 is not in the range x>0"),
        ("--tx-bump-after-s", "inf", "inf is not a number of seconds or gwei"),
        ("--tx-bump-after-blocks", "-3", "-3 is not in the range x>=0"),
        ("--tx-fee-cap-gwei", "0", "0.0 is not in the range x>0"),
        ("--tx-fee-cap-gwei", "1e-12", "1e-12 gwei is less than 1 wei"),
        ("--confirmations", "-1", "-1 is not in the range x>=0"),
        ("--accept-window-s", "0", "0.0 is not in the range x>0"),
    ],
)
def test_oracle_run__bad_tx_policy_value__usage_error_naming_the_option_and_nothing_started(
    tmp_path, option, value, says
):
    data_dir = tmp_path / "data"
    # No node at this URL: the options are checked before the oracle looks for one.
    args = ["--rpc-url", "http://127.0.0.1:9", "--data-dir", str(data_dir), "oracle", "run", option, value]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 2, result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"Error: Invalid value for '{option}': ") and says in error, result.output
    assert "Traceback" not in result.output and not data_dir.exists()


def test_oracle_run__tx_policy_options__reach_the_oracles_transaction_manager(fresh_settings, monkeypatch):
    """The real command, chain and oracle; only the worker's fork and its endless loop are left out."""
    import oracle.service
    import oracle.supervisor

    started = []
    monkeypatch.setattr(oracle.supervisor, "supervise", lambda serve: serve() or 0)  # in this process
    monkeypatch.setattr(oracle.service.Oracle, "run", lambda self: started.append(self))

    result = run_cli(
        fresh_settings,
        "oracle",
        "run",
        "--no-attribution",
        "--node-wait-s",
        "0",
        "--tx-fee-cap-gwei",
        "0.5",
        "--tx-bump-pct",
        "20",
        "--tx-bump-after-s",
        "45",
        "--tx-bump-after-blocks",
        "0",
        "--confirmations",
        "2",
        "--accept-window-s",
        "40",
    )

    assert result.exit_code == 0, result.output
    [oracle_] = started
    assert oracle_.txm.policy == TxPolicy(
        bump_after_s=45.0, bump_after_blocks=0, bump_bps=2000, max_fee_per_gas=500_000_000
    )
    assert oracle_.settings.confirmations == 2
    assert oracle_.book.accept_window_s == 40 and oracle_.api_spec.accept_window_s == 40  # worker and API process


def test_oracle_run__no_tx_policy_options__todays_defaults(fresh_settings, monkeypatch):
    import oracle.service
    import oracle.supervisor

    started = []
    monkeypatch.setattr(oracle.supervisor, "supervise", lambda serve: serve() or 0)
    monkeypatch.setattr(oracle.service.Oracle, "run", lambda self: started.append(self))

    result = run_cli(fresh_settings, "oracle", "run", "--no-attribution", "--node-wait-s", "0")

    assert result.exit_code == 0, result.output
    assert started[0].txm.policy == TxPolicy() and started[0].settings.confirmations == fresh_settings.confirmations
    assert started[0].book.accept_window_s == ACCEPT_WINDOW_S
