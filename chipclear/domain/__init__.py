"""The pure domain: models, policy, events, the gates and the decider. Imports nothing from Temporal.

Importing the package imports none of its modules: each is imported where it is used, so a command
that needs a policy and the screening index does not wait for the events, the gates' rules and the
allocation models to import. The gates register themselves the first time the registry is asked for
one (chipclear.domain.registry).
"""
