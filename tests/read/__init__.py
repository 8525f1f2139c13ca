"""Tests of read: exports of every format and encoding, damaged ones included."""
