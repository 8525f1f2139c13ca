"""Tests of write: delivered and dead-letter files, and what tampering with them gives."""
