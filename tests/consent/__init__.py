"""Tests of consent: the consent rules and events."""
