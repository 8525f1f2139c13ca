"""Tests of conform: casting values to their schema types."""
