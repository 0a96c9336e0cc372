"""Workflows: deterministic orchestration only. No I/O, no clocks, no randomness.

The modules that define a workflow do without `from __future__ import annotations`: the sandbox imports
such a module afresh for every run, and `@workflow.defn` would then resolve every handler's string
annotations again each time (docs/performance.md, "One payload converter a process"). A test holds it.
"""
