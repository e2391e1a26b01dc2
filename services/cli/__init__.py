"""The `siloflow` command line."""
