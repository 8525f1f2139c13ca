"""Tests of stream: change events of every CDC tool, feeds, consent in order, epochs, cut-over."""
