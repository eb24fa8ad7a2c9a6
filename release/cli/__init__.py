"""The `fraudcd` command line."""
