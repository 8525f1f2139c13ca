"""Consent: the third stage. Which customers may move (consent, withdrawals, erasure, the separate
consents for sensitive data and for cross-border transfer), decided from the registry and applied
to every table's rows. rules.py and events.py are pure; gate.py holds the Beam composites.
Next: mask/."""
