"""Reading request and evidence files through the input gate; every problem names the file and field.

The gate (chipclear.domain.input_gate) bounds the bytes, the depth and the types; the models bound each
field. Nothing is sent anywhere until a file has passed both. (A date in the future but within the
models' bounds is not refused here: the domestic-quota gate judges it, record by record, as evidence
that does not count, against the workflow's own time.)
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from chipclear.domain import input_gate
from chipclear.domain.input_gate import InputRefused
from chipclear.domain.limits import (
    MAX_EVIDENCE_BYTES,
    MAX_RECORDS,
    MAX_REQUEST_BYTES,
    MAX_SCREENING_LIST_BYTES,
    cut_text,
)
from chipclear.domain.models import Attachment, ImportRequest, ProcurementRecord, refuse_nul
from chipclear.domain.policy import describe_validation_error

# Bad input from the user: the CLI prints the message and exits 2. The gate's own refusal, so that a
# refusal from the gate and one from a command are caught alike.
InvalidInput = InputRefused


def read_text(path: Path, *, limit: int = MAX_SCREENING_LIST_BYTES, what: str = "file") -> str:
    """A regular UTF-8 file of at most `limit` bytes (a screening list's limit unless told)."""
    return input_gate.read_text(path, limit=limit, what=what)


def read_document(path: Path, *, limit: int = MAX_REQUEST_BYTES, what: str = "file") -> Any:
    """JSON or YAML, chosen by extension (YAML is a superset of JSON, so anything else reads as YAML)."""
    return input_gate.read_document(path, limit=limit, what=what)


def load_request(path: Path) -> ImportRequest:
    return check_request(read_document(path, what="request file"), _name(path))


def check_request(
    document: Any,
    where: str,
    *,
    describe: Callable[[ValidationError], str] = describe_validation_error,
) -> ImportRequest:
    """A parsed request (a file's, or an order book row's) through the models: every request filed
    passes here, whatever it came in, and is refused naming `where` (a file, `orders.csv row 12`);
    `describe` names the fields as the user wrote them (an order book's columns)."""
    if not isinstance(document, dict):
        raise InvalidInput(f"{where}: expected a mapping with request_id, buyer, units, …")
    try:
        request = ImportRequest.model_validate(document)
        refuse_nul(request)
    except ValidationError as exc:
        raise InvalidInput(f"{where}: {describe(exc)}") from None
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    if request.exporter is None:
        raise InvalidInput(
            f"{where}: exporter: a request names its exporter (exporter: {{name: …, country: US}}), "
            "whose shipments count against the 50% rule"
        )
    return request


def _name(path: Path) -> str:
    return cut_text(str(path))


_RECORDS = TypeAdapter(list[ProcurementRecord])


EVIDENCE_COLUMNS = ("vendor", "product", "units", "invoice")


def load_evidence(path: Path) -> list[ProcurementRecord]:
    """Procurement records from a JSON or YAML list, or a CSV with a header row naming the fields;
    at most MAX_RECORDS a file (more go in further files, one `evidence` call each)."""
    if path.suffix.lower() == ".csv":
        records = _evidence_from_csv(path)
    else:
        document = read_document(path, limit=MAX_EVIDENCE_BYTES, what="evidence file")
        if isinstance(document, dict) and "domestic_procurement" in document:
            document = document["domestic_procurement"]
        if not isinstance(document, list) or not document:
            raise InvalidInput(
                f"{_name(path)}: expected a non-empty list of {{vendor, product, units, invoice}}"
            )
        _few_enough(path, len(document))
        try:
            records = _RECORDS.validate_python(document)
        except ValidationError as exc:
            raise InvalidInput(f"{_name(path)}: {describe_validation_error(exc)}") from None
    for number, record in enumerate(records):
        _text_only(path, record, f"{number}.")
    return records


def _few_enough(path: Path, count: int) -> None:
    if count > MAX_RECORDS:
        raise InvalidInput(
            f"{_name(path)}: more than {MAX_RECORDS} records in one file; send the rest in "
            "further files, one `chipclear evidence` each"
        )


T = TypeVar("T", bound=BaseModel)


def _text_only(path: Path, model: T, where: str = "") -> T:
    try:
        refuse_nul(model)
    except ValueError as exc:
        raise InvalidInput(f"{_name(path)}: {where}{exc}") from None
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
        raise InvalidInput(f"--file {_name(path)}: no such file") from None
    except OSError as exc:  # permission, a symbolic link loop, a name too long, …
        raise InvalidInput(f"--file {_name(path)}: cannot read ({exc.strerror or exc})") from None
    return Attachment(name=path.name, size=size, sha256=digest.hexdigest())


DECIMAL = re.compile(r"[1-9][0-9]{0,11}")


def _evidence_from_csv(path: Path) -> list[ProcurementRecord]:
    """Every bad row is reported, by its line number and field, before anything is sent."""
    text = read_text(path, limit=MAX_EVIDENCE_BYTES, what="evidence file")
    reader = csv.DictReader(io.StringIO(text), strict=True)
    try:
        header = [column.strip() for column in reader.fieldnames or []]
        missing = [column for column in EVIDENCE_COLUMNS if column not in header]
        if missing:
            raise InvalidInput(
                f"{_name(path)}: header: missing column(s) {', '.join(missing)} (the header row names "
                f"{', '.join(EVIDENCE_COLUMNS)}, and optionally invoice_date, delivered_on, data_center)"
            )
        reader.fieldnames = header
        records: list[ProcurementRecord] = []
        problems: list[str] = []
        for row in reader:
            if None in row:
                problems.append(f"row {reader.line_num}: more fields than the {len(header)} columns")
                continue
            # An empty cell is a field left out, so optional columns may stay blank.
            fields: dict[str, Any] = {k: v.strip() for k, v in row.items() if v and v.strip()}
            if len(records) + len(problems) >= MAX_RECORDS:
                _few_enough(path, MAX_RECORDS + 1)
            # A CSV cell is text: a count is read as a number only when it is written as one.
            if DECIMAL.fullmatch(fields.get("units", "")):
                fields["units"] = int(fields["units"])
            try:
                records.append(ProcurementRecord.model_validate(fields))
                refuse_nul(records[-1])
            except ValidationError as exc:
                problems.append(f"row {reader.line_num}, {describe_validation_error(exc)}")
            except ValueError as exc:
                problems.append(f"row {reader.line_num}, {exc}")
    except csv.Error as exc:  # the DictReader's count lags behind the line that failed
        raise InvalidInput(f"{_name(path)}: row {reader.reader.line_num}: not valid CSV ({exc})") from None
    if problems:
        raise InvalidInput(f"{_name(path)}: " + "; ".join(problems))
    if not records:
        raise InvalidInput(f"{_name(path)}: no records under the header row")
    return records
