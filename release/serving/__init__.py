"""Serving: the scoring service, its decision log, the traffic replayer, and the release reports' web server."""
