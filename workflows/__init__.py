"""Workflows: deterministic orchestration only. No I/O, no clocks, no randomness."""
