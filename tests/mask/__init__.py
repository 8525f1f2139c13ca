"""Tests of mask: the masking methods."""
