"""Reading request and evidence files; every problem is reported with its field path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from chipclear.domain.models import Attachment, ImportRequest, ProcurementRecord
from chipclear.domain.policy import describe_validation_error


class InvalidInput(ValueError):
    """Bad input from the user: the CLI prints the message and exits 2."""


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read as UTF-8 text ({exc})") from None


def read_document(path: Path) -> Any:
    """JSON or YAML, chosen by extension (YAML is a superset of JSON, so anything else tries YAML)."""
    text = read_text(path)
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None


def load_request(path: Path) -> ImportRequest:
    document = read_document(path)
    if not isinstance(document, dict):
        raise InvalidInput(f"{path}: expected a mapping with request_id, buyer, units, …")
    try:
        return ImportRequest.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None


_RECORDS = TypeAdapter(list[ProcurementRecord])


def load_evidence(path: Path) -> list[ProcurementRecord]:
    document = read_document(path)
    if isinstance(document, dict) and "domestic_procurement" in document:
        document = document["domestic_procurement"]
    if not isinstance(document, list) or not document:
        raise InvalidInput(f"{path}: expected a non-empty list of {{vendor, product, units, invoice}}")
    try:
        return _RECORDS.validate_python(document)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None


MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024


def load_attachment(path: Path) -> Attachment:
    """Pin a supporting file by name, size and SHA-256; the file stays with the team's records."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InvalidInput(f"--file {path}: not a regular file")
        if size > MAX_ATTACHMENT_BYTES:
            raise InvalidInput(f"--file {path}: {size} bytes is over the {MAX_ATTACHMENT_BYTES} byte limit")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise InvalidInput(f"--file {path}: no such file") from None
    except PermissionError as exc:
        raise InvalidInput(f"--file {path}: cannot read ({exc})") from None
    return Attachment(name=path.name, size=size, sha256=digest.hexdigest())
