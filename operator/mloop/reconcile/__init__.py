"""Pure decisions: (object, observed world) -> actions and new status. No I/O."""
