"""Tests of common: scratch partitions, sorted keys, progress, signals."""
