"""Pure functions: object -> manifest dict. No I/O."""
