"""Novation's tests, in folders that mirror the code's stages (docs/architecture.md)."""
