"""Activities: every side effect of chipclear, each idempotent under retry."""
