"""The event store: the legal record. Small interfaces (`protocol`); backends chosen by URL (`factory`).

Importing the package imports none of its modules: a command that reads one table straight from a
SQLite file (chipclear.store.screening_tables, chipclear.request_rows) does not wait for the store's
interfaces, which import the domain's events.
"""
