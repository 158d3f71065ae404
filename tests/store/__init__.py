"""Tests for the content store (tributa.store)."""
