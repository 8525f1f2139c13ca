"""Tests of commit: the audit log, re-identification risk, notification list, report and
manifest."""
