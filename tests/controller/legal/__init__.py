"""Tests of the legal retention log."""
