"""Domain errors: a command the state or the policy forbids. Messages are shown to people as-is."""


class DomainError(Exception):
    """The command breaks a rule; nothing is recorded. The message says which rule and why."""
