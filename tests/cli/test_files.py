"""Reading files from disk: a policy (TOML), a request (JSON, YAML), evidence (JSON, YAML, CSV). Every
problem names the file and the field; the rules the records are then judged by are tested in
tests/domain (pure, without files)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from chipclear.cli.files import InvalidInput, load_evidence, load_request
from chipclear.domain.gates import cn_import
from chipclear.domain.models import ImportRequest, PartyKind, ProcurementRecord
from chipclear.domain.policy import Policy, PolicyError, describe_validation_error, load_policy
from tests.domain.test_evidence import VENDOR_LIST, judged, rec
from tests.factories import request_doc

# -- policy files -----------------------------------------------------------------------------------


def write_policy(tmp_path: Path, body: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def test_policy_path_may_be_a_string(tmp_path):
    path = write_policy(tmp_path, 'version = "v"\n[cn_import]\ndecision_deadline = "P1DT12H"\n')
    assert cn_import.GATE.section(load_policy(str(path))).decision_deadline == timedelta(days=1, hours=12)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('version = "v"\n[us_export]\ndecision_deadline = "30"\n', id="bad duration"),
        pytest.param('version = "v"\n[domestic_quota]\nratio = 2.0\n', id="unknown key in a section"),
        pytest.param('version = "v"\ncolour = "blue"\n', id="unknown top-level key"),
        pytest.param('version = "v"\nroute = ["us-export", "cn-import", "us-export"]\n', id="gate twice"),
        pytest.param("[us_export]\nmode = 'auto'\n", id="no version"),
    ],
)
def test_a_policy_files_problems_are_named_after_the_file(tmp_path, body):
    """load_policy reports the file, then every problem as tests/domain/test_policy.py names it."""
    path = write_policy(tmp_path, body)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    with pytest.raises(ValidationError) as problems:
        Policy.model_validate(tomllib.loads(body))
    assert str(info.value) == f"policy file {path}: {describe_validation_error(problems.value)}"


def test_missing_policy_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError, match=r"does not exist") as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_invalid_toml(tmp_path):
    path = write_policy(tmp_path, 'version = "v"\n[us_export\nmode = "auto"\n')
    with pytest.raises(PolicyError, match=r"is not valid TOML") as info:
        load_policy(path)
    assert str(path) in str(info.value)


# -- request files ----------------------------------------------------------------------------------

SUFFIXES = [".json", ".yaml", ".yml"]


def write_document(tmp_path: Path, document: Any, suffix: str, name: str = "request") -> Path:
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(document), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_valid_request_loads(tmp_path, suffix):
    doc = request_doc(end_user={"name": "Lab", "country": "CN", "kind": "university"})
    request = load_request(write_document(tmp_path, doc, suffix))
    assert request == ImportRequest.model_validate(doc)
    assert request.request_id == doc["request_id"]
    assert request.effective_end_user.kind is PartyKind.UNIVERSITY
    assert request.domestic_procurement[0].invoice == "HW-2026-0001"


def test_hand_written_yaml_request_loads(tmp_path):
    path = tmp_path / "request.yaml"
    path.write_text(
        """
request_id: BD-2026-001
buyer: {name: ByteDance Ltd., country: CN, kind: private}
exporter: {name: NVIDIA Corporation}
end_use: large language model training
units: 50000
data_center:
  name: Wuhu Cluster 3
  province: Anhui
""",
        encoding="utf-8",
    )
    request = load_request(path)
    assert request.units == 50_000
    assert request.exporter is not None and request.exporter.country == "US"
    assert request.domestic_procurement == []
    assert request.data_center.state_funded is False


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _duplicate_invoice(doc: dict[str, Any]) -> None:
    doc["domestic_procurement"] = [
        {"vendor": "Huawei", "product": "Ascend 910C", "units": 10, "invoice": "INV-7"},
        # Invoice numbers are the vendor's: another vendor may use the same one.
        {"vendor": "Hygon", "product": "DCU", "units": 10, "invoice": "INV-7"},
        # The same vendor's number, written differently, is the same invoice.
        {"vendor": "Huawei", "product": "Ascend 910B", "units": 10, "invoice": "inv 7"},
    ]


BAD_REQUESTS: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("request_id too short", _set("request_id", "ab"), "request_id", "(got 'ab')"),
    ("request_id bad characters", _set("request_id", "bad id!"), "request_id", "(got 'bad id!')"),
    ("request_id too long", _set("request_id", "x" * 65), "request_id", "(got '" + "x" * 65 + "')"),
    ("buyer.country not alpha-2", _set("buyer.country", "China"), "buyer.country", "(got 'China')"),
    ("buyer.kind unknown", _set("buyer.kind", "alien"), "buyer.kind", "(got 'alien')"),
    ("units zero", _set("units", 0), "units", "(got 0)"),
    ("units too many", _set("units", 1_000_001), "units", "(got 1000001)"),
    ("units not a number", _set("units", "lots"), "units", "(got 'lots')"),
    ("product H100", _set("product", "H100"), "product", "(got 'H100')"),
    ("unknown field", _set("unit", 5), "unit", "Extra inputs are not permitted (got 5)"),
    ("unknown nested field", _set("buyer.address", "Beijing"), "buyer.address", "(got 'Beijing')"),
    (
        "bad procurement units",
        _set("domestic_procurement", [{"vendor": "H", "product": "A", "units": 0, "invoice": "I"}]),
        "domestic_procurement.0.units",
        "(got 0)",
    ),
    (
        "duplicate invoice, the vendor's legal form written out",
        _set(
            "domestic_procurement",
            [
                {"vendor": "Huawei", "product": "Ascend 910C", "units": 10, "invoice": "HW-1"},
                {"vendor": "Huawei Co., Ltd.", "product": "Ascend 910C", "units": 10, "invoice": "hw 1"},
            ],
        ),
        "domestic_procurement",
        "invoice 'hw 1' appears more than once",
    ),
    # PostgreSQL cannot store a NUL; it is refused at the door, named, on either backend.
    ("NUL in a name", _set("buyer.name", "Acme\x00 Ltd"), "buyer.name", "contains a NUL character"),
    (
        "NUL in an extra procurement field",
        _set(
            "domestic_procurement",
            [{"vendor": "H", "product": "A", "units": 1, "invoice": "I", "note": "a\x00b"}],
        ),
        "domestic_procurement.0.note",
        "contains a NUL character",
    ),
    (
        "duplicate invoice",
        _duplicate_invoice,
        "domestic_procurement",
        "invoice 'inv 7' appears more than once",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field", "shown"),
    [pytest.param(m, f, s, id=name) for name, m, f, s in BAD_REQUESTS],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_bad_request_field_names_path_and_value(tmp_path, suffix, mutate, field, shown):
    doc = request_doc()
    mutate(doc)
    path = write_document(tmp_path, doc, suffix)
    with pytest.raises(InvalidInput) as info:
        load_request(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert f"{field}:" in message
    assert shown in message


def test_missing_required_field_is_named(tmp_path):
    path = write_document(tmp_path, request_doc(units=None), ".json")
    with pytest.raises(InvalidInput, match=r"units: Field required"):
        load_request(path)


@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".json", "[1, 2, 3]"), (".yaml", "- a\n- b\n"), (".yaml", "just a string\n"), (".yaml", "")],
)
def test_non_mapping_request_is_refused(tmp_path, suffix, text):
    path = tmp_path / f"request{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"expected a mapping"):
        load_request(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_missing_request_file(tmp_path, suffix):
    path = tmp_path / f"absent{suffix}"
    with pytest.raises(InvalidInput, match=r"no such file") as info:
        load_request(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(InvalidInput, match=r"cannot read"):
        load_request(tmp_path)


@pytest.mark.parametrize(
    ("suffix", "text", "match"),
    [
        (".yaml", "buyer: [unclosed\n", r"not valid YAML at line 2"),
        (".yml", "a: b: c\n", r"not valid YAML at line 1, column 5"),
        (".json", '{"request_id": ', r"not valid JSON at line 1, column 16"),
    ],
)
def test_invalid_syntax(tmp_path, suffix, text, match):
    path = tmp_path / f"request{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInput, match=match):
        load_request(path)


# -- evidence files ---------------------------------------------------------------------------------

RECORDS = [
    {"vendor": "Huawei", "product": "Ascend 910C", "units": 30_000, "invoice": "HW-1"},
    {"vendor": "Cambricon", "product": "MLU590", "units": 20_000, "invoice": "CB-1"},
]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_evidence_list_loads(tmp_path, suffix):
    records = load_evidence(write_document(tmp_path, RECORDS, suffix, "evidence"))
    assert records == [ProcurementRecord.model_validate(r) for r in RECORDS]


def test_evidence_under_domestic_procurement_key_loads(tmp_path):
    path = write_document(tmp_path, {"domestic_procurement": RECORDS}, ".yaml", "evidence")
    assert [r.invoice for r in load_evidence(path)] == ["HW-1", "CB-1"]


@pytest.mark.parametrize("document", [[], {"domestic_procurement": []}, {"records": RECORDS}, "text"])
def test_empty_or_non_list_evidence_is_refused(tmp_path, document):
    path = write_document(tmp_path, document, ".json", "evidence")
    with pytest.raises(
        InvalidInput, match=r"expected a non-empty list of \{vendor, product, units, invoice\}"
    ):
        load_evidence(path)


@pytest.mark.parametrize(
    ("record", "field", "shown"),
    [
        ({"units": 0}, "1.units", "0"),
        ({"units": -5}, "1.units", "-5"),
        ({"units": 10_000_001}, "1.units", "10000001"),
        ({"units": "many"}, "1.units", "'many'"),
        ({"invoice": ""}, "1.invoice", "''"),
        ({"invoice_date": "2026-02-30"}, "1.invoice_date", "'2026-02-30'"),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_bad_evidence_names_index_and_field(tmp_path, suffix, record, field, shown):
    path = write_document(tmp_path, [RECORDS[0], {**RECORDS[1], **record}], suffix, "evidence")
    with pytest.raises(InvalidInput) as info:
        load_evidence(path)
    message = str(info.value)
    assert f"{field}:" in message
    assert f"(got {shown})" in message


def test_evidence_keeps_extra_fields_and_reads_the_optional_ones(tmp_path):
    """The named fields are the contract; a procurement system's own extra fields travel along."""
    extra = {**RECORDS[0], "serial": "X-1", "invoice_date": "2026-01-10", "data_center": "Wuhu 3"}
    [record] = load_evidence(write_document(tmp_path, [extra], ".yaml", "evidence"))
    assert record.model_extra == {"serial": "X-1"}
    assert record.invoice_date is not None and record.invoice_date.isoformat() == "2026-01-10"
    assert record.data_center == "Wuhu 3" and record.delivered_on is None


def test_evidence_missing_field_names_index(tmp_path):
    path = write_document(tmp_path, [{"vendor": "Huawei", "product": "Ascend", "units": 3}], ".json")
    with pytest.raises(InvalidInput, match=r"0\.invoice: Field required"):
        load_evidence(path)


# -- evidence from CSV ------------------------------------------------------------------------------


def write_csv(tmp_path: Path, text: str, name: str = "evidence.csv", *, bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def test_csv_with_required_and_optional_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "vendor,product,units,invoice,invoice_date,delivered_on,data_center,po_number\n"
        "Huawei,Ascend 910C,30000,HW-1,2026-01-05,2026-01-20,Wuhu Cluster 3,PO-77\n"
        "Cambricon, MLU370 ,5000,CB-2,,,,\n",
    )
    first, second = load_evidence(path)
    assert first == rec(
        "HW-1",
        units=30_000,
        invoice_date="2026-01-05",
        delivered_on="2026-01-20",
        data_center="Wuhu Cluster 3",
        po_number="PO-77",
    )
    assert first.invoice_date == date(2026, 1, 5) and first.delivered_on == date(2026, 1, 20)
    assert first.model_extra == {"po_number": "PO-77"}
    # Empty optional cells are left out, not empty strings.
    assert second == rec("CB-2", vendor="Cambricon", product="MLU370", units=5_000)
    assert second.invoice_date is None and second.data_center is None
    assert second.model_extra == {}


def test_csv_with_a_bom_and_reordered_padded_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path, " invoice , units,vendor,product\r\nHW-1,10,Huawei,Ascend 910B\r\n", bom=True)
    assert load_evidence(path) == [rec("HW-1", units=10, product="Ascend 910B")]


def test_csv_missing_required_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "vendor,product,amount,invoice_no\nHuawei,Ascend 910C,5,HW-1\n")
    with pytest.raises(InvalidInput, match=r"header: missing column\(s\) units, invoice") as info:
        load_evidence(path)
    assert str(path) in str(info.value)


def test_csv_every_bad_row_is_reported_with_line_and_field(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "vendor,product,units,invoice\n"
        "Huawei,Ascend 910C,5,HW-1\n"
        "Huawei,Ascend 910C,lots,HW-2\n"
        "Huawei,Ascend 910C,5,HW-3\n"
        ",Ascend 910C,5,HW-4\n",
    )
    with pytest.raises(InvalidInput) as info:
        load_evidence(path)
    message = str(info.value)
    assert re.search(r"row 3, units: .*\(got 'lots'\)", message), message
    assert "row 5, vendor: Field required" in message
    assert "row 2" not in message and "row 4" not in message


def test_csv_row_with_too_many_fields(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "vendor,product,units,invoice\nHuawei,Ascend 910C,5,HW-1,surplus\n")
    with pytest.raises(InvalidInput, match="row 2: more fields than the 4 columns"):
        load_evidence(path)


def test_csv_row_with_too_few_fields(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "vendor,product,units,invoice\nHuawei,Ascend 910C,5\n")
    with pytest.raises(InvalidInput, match="row 2, invoice: Field required"):
        load_evidence(path)


def test_csv_unterminated_quote(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 'vendor,product,units,invoice\nHuawei,"Ascend 910C,5,HW-1\n')
    with pytest.raises(InvalidInput, match="not valid CSV"):
        load_evidence(path)


def test_csv_malformed_row_is_reported_at_its_own_line(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        'vendor,product,units,invoice\nHuawei,Ascend 910C,5,HW-1\nHuawei,Ascend 910C,5,"HW-2"x\n',
    )
    with pytest.raises(InvalidInput, match=r"row 3: not valid CSV"):
        load_evidence(path)


def test_csv_header_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "vendor,product,units,invoice\n")
    with pytest.raises(InvalidInput, match="no records under the header row"):
        load_evidence(path)


def test_csv_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "vendor,product,units,invoice\n\nHuawei,Ascend 910C,5,HW-1\n\n")
    assert load_evidence(path) == [rec("HW-1", units=5)]


def test_csv_records_feed_the_judge(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "vendor,product,units,invoice,invoice_date\n"
        "Huawei Co. Ltd.,Ascend 910C,5,HW-1,2026-01-31\n"
        "NVIDIA,H20,5,NV-1,\n"
        "Huawei,Ascend 910C,5,hw 1,\n",
    )
    accepted, rejected = judged(load_evidence(path), VENDOR_LIST)
    assert [r.invoice for r in accepted] == ["HW-1"]
    assert [r.record.invoice for r in rejected] == ["NV-1", "hw 1"]


def test_a_request_without_its_exporter_is_refused_naming_the_field(tmp_path):
    doc = request_doc()
    doc.pop("exporter")
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(InvalidInput, match="exporter: a request names its exporter"):
        load_request(path)


def test_a_lab_report_is_kept_by_its_content_and_an_altered_copy_is_found(tmp_path):
    from chipclear.kept_files import ToKeep, kept_intact, kept_path

    def keep(path: Path, home: Path) -> tuple[str, int]:
        read = ToKeep(path)
        read.keep(home)
        return read.sha256, read.size

    report = tmp_path / "UL-1.pdf"
    report.write_bytes(b"%PDF-1.4 lab report")
    home = tmp_path / "home"
    read = ToKeep(report)  # read and hashed for the act; nothing kept until the act is recorded
    assert not kept_path(home, read.sha256).exists() and not home.exists()
    digest, size = keep(report, home)
    assert (digest, size) == (read.sha256, read.size)
    assert size == len(b"%PDF-1.4 lab report") and kept_intact(home, digest)
    assert keep(report, home) == (digest, size)  # the same content twice: one file
    kept = kept_path(home, digest)
    assert kept.stat().st_mode & 0o777 == 0o600
    kept.write_bytes(b"%PDF-1.4 forged")
    assert not kept_intact(home, digest)
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInput, match="empty"):
        keep(empty, home)
    with pytest.raises(InvalidInput, match="only a regular file"):
        keep(tmp_path, home)
