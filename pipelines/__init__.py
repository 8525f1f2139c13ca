"""Entry points: each builds a Beam pipeline from a validated config."""
