"""Errors the inference runtime raises for requests it cannot run as given."""

from __future__ import annotations

from tributa.errors import TributaError


class InferenceInputError(TributaError, ValueError):
    """The request itself is wrong (empty prompt, too long, unknown adapter); fix the request."""
