"""Which rows of a projection table to read, and the one SQL that reads them.

Apart from the store package (whose import brings the domain with it) so that a light reader can run the
store's very query: `chipclear list` reads a SQLite store's request rows with sqlite3 alone
(chipclear.request_rows), and the store's projections (chipclear.store.sql_projection) build their SELECT
here too. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RowQuery:
    """Which rows of a projection to read, and which of their columns.

    Rows whose columns equal `equal`, whose key is one of `keys` (when given) and whose comma-separated
    tag columns carry every tag in `tagged`, ordered by `order_by` then the key (`descending`: newest
    first); `columns` (default: all) to read only some. A page: at most `limit` rows, those after `after`
    in that order (keyset pagination: `after` holds the values of `order_by` and the key of the last row
    seen, so a page costs the same however deep it is).
    """

    equal: Mapping[str, Any] = field(default_factory=dict)
    tagged: Mapping[str, Sequence[str]] = field(default_factory=dict)
    columns: Sequence[str] | None = None
    order_by: Sequence[str] = ()
    keys: Sequence[str] | None = None
    descending: bool = False
    limit: int | None = None
    after: Sequence[Any] | None = None

    def named_columns(self, key: str) -> list[str]:
        """Every column the query names besides those it reads, the key (always ordered by) included."""
        return [*self.equal, *self.tagged, *self.order_by, key]


def select_sql(table: str, key: str, columns: Sequence[str], query: RowQuery) -> tuple[str, list[Any]] | None:
    """The SELECT (with `?` placeholders) and its parameters for `query` on `table`, whose key column is
    `key` and whose columns are `columns`; None when it can match no row (an empty `keys`). The caller
    checks that the column names are the table's: they are written into the SQL."""
    if query.keys is not None and not query.keys:
        return None
    where: list[str] = []
    params: list[Any] = []
    for column, value in query.equal.items():
        where.append(f"{column} = ?")
        params.append(value)
    for column, tags in query.tagged.items():
        for tag in tags:
            where.append(f"(',' || {column} || ',') LIKE ?")
            params.append(f"%,{tag},%")
    if query.keys is not None:
        where.append(f"{key} IN ({', '.join('?' * len(query.keys))})")
        params.extend(query.keys)
    order = [*query.order_by, key]
    if query.after is not None:
        if len(query.after) != len(order):
            raise ValueError(f"a page's `after` holds {len(order)} values ({', '.join(order)})")
        # A row value comparison: one index range, whatever the page's depth.
        marks = ", ".join("?" * len(order))
        where.append(f"({', '.join(order)}) {'<' if query.descending else '>'} ({marks})")
        params.extend(query.after)
    direction = " DESC" if query.descending else ""
    sql = (
        f"SELECT {', '.join(query.columns or columns)} FROM {table}"
        f" WHERE {' AND '.join(['1 = 1', *where])}"
        f" ORDER BY {', '.join(f'{column}{direction}' for column in order)}"
    )
    if query.limit is not None:
        sql += f" LIMIT {int(query.limit)}"
    return sql, params
