"""Reading request and evidence files; every problem is reported with its field path."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from chipclear.domain.models import Attachment, ImportRequest, ProcurementRecord, refuse_nul
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
        return _text_only(path, ImportRequest.model_validate(document))
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None


_RECORDS = TypeAdapter(list[ProcurementRecord])


EVIDENCE_COLUMNS = ("vendor", "product", "units", "invoice")


def load_evidence(path: Path) -> list[ProcurementRecord]:
    """Procurement records from a JSON or YAML list, or a CSV with a header row naming the fields."""
    if path.suffix.lower() == ".csv":
        return _evidence_from_csv(path)
    document = read_document(path)
    if isinstance(document, dict) and "domestic_procurement" in document:
        document = document["domestic_procurement"]
    if not isinstance(document, list) or not document:
        raise InvalidInput(f"{path}: expected a non-empty list of {{vendor, product, units, invoice}}")
    try:
        records = _RECORDS.validate_python(document)
    except ValidationError as exc:
        raise InvalidInput(f"{path}: {describe_validation_error(exc)}") from None
    for number, record in enumerate(records):
        _text_only(path, record, f"{number}.")
    return records


T = TypeVar("T", bound=BaseModel)


def _text_only(path: Path, model: T, where: str = "") -> T:
    try:
        refuse_nul(model)
    except ValueError as exc:
        raise InvalidInput(f"{path}: {where}{exc}") from None
    return model


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


def _evidence_from_csv(path: Path) -> list[ProcurementRecord]:
    """Every bad row is reported, by its line number and field, before anything is sent."""
    reader = csv.DictReader(io.StringIO(read_text(path).removeprefix("\ufeff")), strict=True)
    try:
        header = [column.strip() for column in reader.fieldnames or []]
        missing = [column for column in EVIDENCE_COLUMNS if column not in header]
        if missing:
            raise InvalidInput(
                f"{path}: header: missing column(s) {', '.join(missing)} (the header row names "
                f"{', '.join(EVIDENCE_COLUMNS)}, and optionally invoice_date, delivered_on, data_center)"
            )
        reader.fieldnames = header
        records, problems = [], []
        for row in reader:
            if None in row:
                problems.append(f"row {reader.line_num}: more fields than the {len(header)} columns")
                continue
            # An empty cell is a field left out, so optional columns may stay blank.
            fields = {key: value.strip() for key, value in row.items() if value and value.strip()}
            try:
                records.append(ProcurementRecord.model_validate(fields))
                refuse_nul(records[-1])
            except ValidationError as exc:
                problems.append(f"row {reader.line_num}, {describe_validation_error(exc)}")
            except ValueError as exc:
                problems.append(f"row {reader.line_num}, {exc}")
    except csv.Error as exc:  # the DictReader's count lags behind the line that failed
        raise InvalidInput(f"{path}: row {reader.reader.line_num}: not valid CSV ({exc})") from None
    if problems:
        raise InvalidInput(f"{path}: " + "; ".join(problems))
    if not records:
        raise InvalidInput(f"{path}: no records under the header row")
    return records
