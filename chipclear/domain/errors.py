"""Domain errors: a command the state or the policy forbids. Messages are shown to people as-is."""


class DomainError(Exception):
    """The command breaks a rule; nothing is recorded. The message says which rule and why."""


class StaleSignature(DomainError):
    """The act was signed for a version of its stream that has since moved on (a timer or the rules
    acted meanwhile). Nothing is recorded; the same act signed anew, for the version now, may count."""
