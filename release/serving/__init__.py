"""Serving: the scoring service, its decision log and the traffic replayer."""
