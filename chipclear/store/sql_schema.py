"""Schema migrations on SQL: each backend's numbered steps, applied once each, in order."""

from __future__ import annotations

from datetime import UTC, datetime

from chipclear.store.chain import timestamp
from chipclear.store.migrations import MIGRATIONS_TABLE, Migration, SchemaError
from chipclear.store.sql_base import SQLBackend


def schema_version(backend: SQLBackend) -> int:
    with backend._reader() as tx:
        if not backend._has_migrations_table(tx):
            return 0
        found = tx.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(found[0] or 0)


class SQLSchema(SQLBackend):
    def schema_version(self) -> int:
        return schema_version(self)

    def pending_migrations(self) -> list[Migration]:
        current = self.schema_version()
        return [m for m in self.migrations() if m.version > current]

    def require_schema(self) -> None:
        """Refuse to run against a schema this release did not make: too old or too new."""
        current, latest = self.schema_version(), self.migrations()[-1].version
        if current < latest:
            raise SchemaError(
                f"the event store's schema is at version {current}, this release needs {latest}: "
                "run `chipclear store migrate`"
            )
        if current > latest:
            raise SchemaError(
                f"the event store's schema is at version {current}, newer than this release knows "
                f"({latest}): upgrade chipclear"
            )

    def migrate(self) -> list[Migration]:
        """Apply every pending migration in order, each in its own transaction; returns those applied."""
        applied: list[Migration] = []
        if not self.pending_migrations():
            return applied
        for migration in self.migrations():
            with self._transaction() as tx:
                self._lock_migrations(tx)
                tx.execute(MIGRATIONS_TABLE)
                done = tx.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone()
                if done:
                    continue  # applied earlier, or by another process while this one waited
                migration.apply(tx)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, timestamp(datetime.now(UTC))),
                )
                applied.append(migration)
        return applied
