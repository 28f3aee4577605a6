"""The `mloop` command line (also `kubectl mloop`)."""
