"""Slice evaluation, statistics, threshold suggestion and the release report."""
