"""Commit: the last stage. Counts and crc32c in the sealed manifest, the audit log, the
re-identification risk, the notification list and the compliance report."""
