"""Tests of detect: the identifier detectors and check digits."""
