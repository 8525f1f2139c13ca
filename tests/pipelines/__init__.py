"""Tests of pipelines: the commands end to end, runners, templates and benchmarks."""
