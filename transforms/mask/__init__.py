"""Mask: the fourth stage. Each field is redacted, partly masked, pseudonymised, tokenised,
generalised or date-shifted as its classification says. methods.py is pure; mask.py applies it to
record batches in Beam. Next: write/."""
