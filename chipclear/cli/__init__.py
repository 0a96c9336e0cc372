"""The `chipclear` command line: typer for parsing, rich for people, --json for programs."""
