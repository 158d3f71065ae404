"""Chain access shared by the oracle, the agents and the CLI (web3.py)."""
