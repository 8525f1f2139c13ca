"""Tests of config: the schemas, the transfer config and the plan."""
