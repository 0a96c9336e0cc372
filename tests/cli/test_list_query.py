"""`list --query`: the user's expression stays one term under the request-only guard."""

from __future__ import annotations

import pytest

from chipclear.cli.files import InvalidInput
from chipclear.cli.main import _visibility_query


def test_the_users_expression_is_one_parenthesised_term_after_the_guard() -> None:
    query = _visibility_query(
        None, "us-export", None, False, "ChipclearUnits > 1000 OR ChipclearEscalated = true"
    )
    assert query == (
        'WorkflowType = "ImportRequest" AND ChipclearGate = "us-export" AND '
        "(ChipclearUnits > 1000 OR ChipclearEscalated = true)"
    )
    # Parentheses inside quotes are text, not grouping.
    assert _visibility_query(None, None, "A (B) Ltd.", False, "ChipclearBuyer = 'x)'").endswith(
        "(ChipclearBuyer = 'x)')"
    )


@pytest.mark.parametrize(
    "escape",
    [
        "ChipclearGate = 'x') OR (WorkflowType != 'ImportRequest'",
        "ChipclearGate = 'x')) OR ((true",
        "(ChipclearGate = 'x'",
        "ChipclearBuyer = 'unclosed",
    ],
)
def test_an_expression_that_would_escape_the_guard_is_refused(escape: str) -> None:
    with pytest.raises(InvalidInput, match="--query: "):
        _visibility_query(None, None, None, False, escape)
