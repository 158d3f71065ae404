"""Tributa: shared code for the oracle, the compute agents and the CLI."""

__version__ = "0.1.0"
