"""Conform: the second stage. Each column is cast to its schema type and checked (required fields,
formats); repeated primary keys are dropped. Bad rows become dead letters. Next: consent/."""
