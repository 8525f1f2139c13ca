"""Tests of keys: keyrings, encryption and known-answer vectors."""
