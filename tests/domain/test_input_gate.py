"""The input gate (chipclear.domain.input_gate) and the models' strict fields: what a careless or hostile
file may hold is refused with one sentence, fast, before anything is built from it (issue 14).

Pure but for the few files written to tmp_path; the same refusals through the CLI, with exit codes and
"nothing started or written", are the corpus (tests/cli/test_corpus.py)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from chipclear.domain.countries import ISO_3166_ALPHA_2
from chipclear.domain.input_gate import (
    InputRefused,
    json_depth,
    parse_json,
    parse_yaml,
    read_as,
    read_limited,
    read_text,
)
from chipclear.domain.limits import cut, one_sentence
from chipclear.domain.models import DataCenter, ImportRequest, Party, ProcurementRecord
from tests.factories import request_doc

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_billion_laughs_is_refused_before_it_expands() -> None:
    assert len(LAUGHS.encode()) < 700
    # Refused at the first anchor, line 1, column 4: nothing after it was parsed, no node was built
    # (expanded, it is 9^9 strings and gigabytes).
    with pytest.raises(InputRefused, match=r"at line 1, column 4: anchors and aliases"):
        parse_yaml(LAUGHS, "f.yaml")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("units: 16:40", "16:40"),  # sexagesimal 1000 in YAML 1.1
        ("units: 0x3E8", "0x3E8"),
        ("units: 0o17", "0o17"),
        ("units: 012", "012"),  # octal 10 in YAML 1.1
        ("units: yes", "yes"),  # True in YAML 1.1
        ("units: 2026-01-15", "2026-01-15"),  # a date object in YAML 1.1: text, read by the model
    ],
)
def test_yaml_reads_as_the_core_schema_so_nothing_becomes_another_value(text: str, value: str) -> None:
    assert parse_yaml(text, "f.yaml") == {"units": value}


def test_yaml_plain_scalars_that_are_json_types_keep_their_types() -> None:
    assert parse_yaml("[1, -2, 2.5, 1e3, true, false, null, ~, '1']", "f.yaml") == [
        1, -2, 2.5, 1000.0, True, False, None, None, "1"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("units: 1\nunits: 999999\n", "key 'units' appears twice"),
        ("p: .inf\n", "not a finite number"),
        ("p: -.inf\n", "not a finite number"),
        ("p: .nan\n", "not a finite number"),
        ("p: 1e999\n", "not a finite number"),
        ("p: !!binary aGk=\n", "explicit tags"),
        ("p: !!python/object:os.system x\n", "explicit tags"),
        ("b: &x 1\nc: *x\n", "anchors and aliases"),
        ("1: one\n", "a key must be text"),
        ("- a\n---\n- b\n", "not valid YAML"),
        ("[" * 40 + "]" * 40, "nested deeper than 32"),
        ("".join("  " * n + f"k{n}:\n" for n in range(40)) + "  " * 40 + "v: 1\n", "nested deeper than 32"),
        ("x: " + "a" * 5000 + "\n", "5000 characters is over the limit of 4096"),
    ],
)
def test_yaml_refusals_name_the_rule(text: str, says: str) -> None:
    with pytest.raises(InputRefused, match=says) as refused:
        parse_yaml(text, "f.yaml")
    assert str(refused.value).startswith("f.yaml: ")
    assert len(str(refused.value)) <= 300


def test_deep_nesting_is_refused_without_recursion() -> None:
    # json.loads of this raises RecursionError; the gate counts brackets first.
    assert json_depth("[" * 10_000 + "]" * 10_000) == 10_000
    assert json_depth('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"["}') == 1  # brackets in text
    with pytest.raises(InputRefused, match="nested deeper than 32"):
        parse_json("[" * 10_000 + "]" * 10_000, "f.json")
    with pytest.raises(InputRefused, match="nested deeper than 32"):
        parse_yaml("[" * 10_000 + "]" * 10_000, "f.yaml")
    assert parse_json("[" * 32 + "]" * 32, "f.json") is not None  # 32 is allowed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"units": 1, "units": 999999}', "key 'units' appears twice"),
        ('{"p": Infinity}', "Infinity is not a number"),
        ('{"p": -Infinity}', "-Infinity is not a number"),
        ('{"p": NaN}', "NaN is not a number"),
        ('{"p": 1e999}', "too large to be a finite number"),
        ('{"p": ' + "9" * 5000 + "}", "not valid JSON"),
        ('{"a": [1, 2', "not valid JSON at line 1"),
    ],
)
def test_json_refusals_name_the_rule(text: str, says: str) -> None:
    with pytest.raises(InputRefused, match=says):
        parse_json(text, "f.json")


def test_files_that_are_not_regular_files_are_refused_unread(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # reading it would block for ever
    (tmp_path / "loop").symlink_to(tmp_path / "back")
    (tmp_path / "back").symlink_to(tmp_path / "loop")
    (tmp_path / "big").write_bytes(b"x" * 1025)
    for path, says in [
        (Path("/dev/zero"), "a character device"),  # reading it would never end
        (tmp_path, "a directory"),
        (tmp_path / "fifo", "a FIFO"),
        (tmp_path / "loop", "a symbolic link loop"),
        (tmp_path / "none", "no such file"),
        (tmp_path / "big", "1025 bytes is over the limit of 1024 bytes"),
    ]:
        with pytest.raises(InputRefused, match=says):
            read_limited(path, limit=1024, what="request file")


class KeyTrouble(ValueError):
    """A caller's own failure type (keys and checkpoints have theirs)."""


def test_read_as_raises_the_callers_own_type_with_the_same_sentence(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("ed25519:abc\n", encoding="utf-8")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "latin1").write_bytes("caf\xe9".encode("latin-1"))

    def read(path: Path) -> str:
        return read_as(KeyTrouble, read_text, path, limit=64, what="key file", missing="no key there")

    assert read(tmp_path / "key") == "ed25519:abc\n"
    assert read_as(KeyTrouble, read_limited, tmp_path / "key", limit=64, what="key file", missing="-") == (
        b"ed25519:abc\n"
    )
    for path, says in [
        (tmp_path / "none", f"^{tmp_path / 'none'}: no key there$"),  # nothing there: the caller's words
        (tmp_path / "dangling", "key file .*dangling: no such file"),  # a link to nothing: the gate's
        (tmp_path, "key file .*: cannot read a directory, only a regular file"),
        (tmp_path / "latin1", "key file .*latin1: not UTF-8 text"),
    ]:
        with pytest.raises(KeyTrouble, match=says):
            read(path)


# -- the models' strict fields --------------------------------------------------------------------------
def refused(model: type, document: dict[str, object], field: str) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(document)  # type: ignore[attr-defined]
    assert field in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("units", [True, "1000", 1000.0, 16 * 60 + 40.5, 2**70, 0])
def test_units_are_a_whole_number_in_range_and_nothing_else(units: object) -> None:
    refused(ImportRequest, request_doc(units=units), "units")


@pytest.mark.parametrize("price", [float("inf"), float("nan"), "32000", True, 0, 1e12])
def test_a_unit_price_is_a_finite_number_in_range(price: object) -> None:
    refused(ImportRequest, request_doc(unit_price_usd=price), "unit_price_usd")


def test_a_whole_unit_price_is_a_price() -> None:
    assert ImportRequest.model_validate(request_doc(unit_price_usd=32000)).unit_price_usd == 32000.0


@pytest.mark.parametrize("code", ["ZZ", "XX", "AA", "QM", "EU", "UK"])
def test_a_country_is_an_assigned_iso_3166_code(code: str) -> None:
    said = refused(Party, {"name": "X", "country": code, "kind": "private"}, "country")
    assert "is not an ISO 3166-1 alpha-2 country code" in said


def test_every_assigned_country_is_admitted() -> None:
    assert len(ISO_3166_ALPHA_2) == 249
    for code in ("CN", "US", "SG", "HK", "TW", "GB", "NO"):
        assert Party(name="X", country=code, kind="private").country == code


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("installed_domestic", 2**70),
        ("installed_domestic", True),
        ("installed_foreign", "5"),
        ("state_funded", "yes"),
    ],
)
def test_a_data_centres_counts_and_flags_are_strict(field: str, value: object) -> None:
    refused(DataCenter, {"name": "D", "province": "P", field: value}, field)


RECORD = {"vendor": "Huawei", "product": "Ascend 910C", "units": 5, "invoice": "HW-1"}


@pytest.mark.parametrize(
    "moment", [date(1, 1, 1), "0001-01-01", "1999-12-31", "2100-01-01", 1767225600, True, "2026-02-30"]
)
def test_an_invoice_date_is_a_date_within_sane_bounds(moment: object) -> None:
    refused(ProcurementRecord, {**RECORD, "invoice_date": moment}, "invoice_date")


def test_an_invoice_date_in_bounds_reads_from_iso_text() -> None:
    record = ProcurementRecord.model_validate({**RECORD, "invoice_date": "2026-01-15"})
    assert record.invoice_date == date(2026, 1, 15)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({f"x{n}": "v" for n in range(9)}, "more than 8 fields"),
        ({"note": "n" * 1001}, "1001 characters is over the limit of 1000"),
        ({"note": {"nested": 1}}, "holds text or a whole number"),
        ({"weight": 1.5}, "holds text or a whole number"),
        ({"Note!": "x"}, "lower-case letters"),
    ],
)
def test_a_procurement_systems_own_fields_are_bounded(extra: dict[str, object], says: str) -> None:
    refused(ProcurementRecord, {**RECORD, **extra}, says)


def test_a_short_extra_field_still_travels_along() -> None:
    assert ProcurementRecord.model_validate({**RECORD, "po_number": "PO-77"}).model_extra == {
        "po_number": "PO-77"
    }


def test_values_are_quoted_cut_short_and_messages_are_one_sentence() -> None:
    huge = "x" * 50_000_000
    assert len(cut(huge)) == 80 and cut(huge).endswith("…")
    said = one_sentence("first line\nsecond   line " + huge + " (the advice)")
    assert len(said) <= 300 and "\n" not in said and said.startswith("first line second line x")
    assert said.endswith("x (the advice)")  # the huge word lost its middle, the advice survived
    cut_end = one_sentence("what failed: " + " ".join(["word"] * 200))
    assert len(cut_end) == 300 and cut_end.startswith("what failed: word") and cut_end.endswith("…")
    message = refused(Party, {"name": huge[:1_000_000], "country": "CN", "kind": "private"}, "name")
    assert len(message) < 1_000
