"""Files kept by their content: lab reports (and any document a record pins by its sha256).

The event store records a file's digest; the file itself is kept here, next to the store, under
`files/sha256/<2 hex>/<64 hex>`, so the record and the document can never drift apart: a kept file is
named by what it holds, written once (0600), and an auditor re-hashes it to check it is the one recorded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from chipclear.domain.input_gate import InputRefused, read_limited
from chipclear.domain.limits import MAX_LAB_REPORT_BYTES
from chipclear.private_files import FILE_MODE, private_dir

if TYPE_CHECKING:
    from chipclear.domain.events import StoredEvent
    from chipclear.store.reconcile import Difference


def kept_path(home: Path, sha256: str) -> Path:
    return home / "files" / "sha256" / sha256[:2] / sha256


class ToKeep:
    """A file read and hashed, to be kept once the act that names it is recorded: a refused act keeps
    nothing, as it records nothing."""

    def __init__(self, path: Path, *, what: str = "--lab-report") -> None:
        self.data = read_limited(path, limit=MAX_LAB_REPORT_BYTES, what=what)
        if not self.data:
            raise InputRefused(f"{what} {path.name}: the file is empty")
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.size = len(self.data)

    def keep(self, home: Path) -> Path:
        """Write it under its sha256 (0600, whole or not at all); the same content twice writes once."""
        target = kept_path(home, self.sha256)
        if not target.exists():
            private_dir(target.parent)
            partial = target.with_name(f".{self.sha256}.{os.getpid()}")
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(self.data)
            os.replace(partial, target)
        return target


def kept_intact(home: Path, sha256: str) -> bool:
    """Whether the kept file for `sha256` is there and still holds exactly that content."""
    target = kept_path(home, sha256)
    try:
        return hashlib.sha256(target.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def lab_reports_checked(home: Path, events: Iterable[StoredEvent]) -> tuple[list[Difference], list[str]]:
    """Every lab report a recorded shipment names, checked against the file kept here: those whose kept
    file no longer holds what the shipment recorded (a break: the record says a lab reviewed the shipment,
    and the report must be the one it names), and the digests of those not kept in this home at all (kept
    where the shipment was recorded, or a log moved here without its files: said, not a break)."""
    from chipclear.domain.licence import ShipmentRecorded
    from chipclear.store.reconcile import Difference

    altered, missing = [], []
    for event in events:
        if not isinstance(event.data, ShipmentRecorded):
            continue
        digest = event.data.lab_report.sha256
        if not kept_path(home, digest).exists():
            missing.append(digest)
        elif not kept_intact(home, digest):
            altered.append(
                Difference(
                    table="files",
                    key=digest,
                    problem=f"the lab report of shipment {event.data.shipment_id} ({event.stream_id}) kept "
                    f"as {kept_path(home, digest)} no longer holds what the shipment recorded "
                    f"(sha256 {digest[:12]}…)",
                )
            )
    return altered, missing
