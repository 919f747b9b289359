"""The value rules of imaging/limits.py at their boundaries: at the limit passes, one over
is refused; control characters by kind; reasons never quote the value."""

from __future__ import annotations

import pytest

from casebase.errors import InputError
from casebase.imaging import limits

SECRET = "MRN-0001234 SMITH^JOHN"


@pytest.mark.parametrize(
    "column, limit",
    [("study_id", limits.ID_MAX), ("image_path", limits.PATH_MAX), ("view", limits.CODE_MAX)],
)
def test_codes_at_the_limit_pass_one_over_is_refused(column: str, limit: int) -> None:
    at = "𝄞" * limit  # 4 bytes in UTF-8: the limit counts characters
    assert limits.check_code(column, at, limit) == at
    with pytest.raises(InputError) as info:
        limits.check_code(column, at + "x", limit)
    assert str(info.value) == f"{column} is {limit + 1:,} characters long (limit {limit:,})"


def test_text_at_the_limit_passes_one_over_is_refused() -> None:
    at = "a" * limits.REPORT_MAX
    assert limits.check_text("report", at, limits.REPORT_MAX) == at
    with pytest.raises(InputError, match=r"^report is 65,537 characters long \(limit 65,536\)$"):
        limits.check_text("report", at + "a", limits.REPORT_MAX)


@pytest.mark.parametrize(
    "char, shown",
    [
        ("\x00", "a NUL byte"),
        ("\x01", "a control character (U+0001)"),
        ("\t", "a control character (U+0009)"),
        ("\n", "a control character (U+000A)"),
        ("\x1b", "a control character (U+001B)"),
        ("\x7f", "a control character (U+007F)"),
        ("\x85", "a control character (U+0085)"),
        ("\x9f", "a control character (U+009F)"),
    ],
)
def test_codes_hold_no_control_character(char: str, shown: str) -> None:
    with pytest.raises(InputError) as info:
        limits.check_code("patient_id", SECRET + char, limits.ID_MAX)
    message = str(info.value)
    assert message == f"patient_id contains {shown} at character {len(SECRET) + 1}"
    assert "SMITH" not in message


def test_text_keeps_tab_cr_lf_and_other_controls_but_not_nul() -> None:
    text = "FINDINGS:\tclear.\r\nIMPRESSION: normal.\x0c\x1b\x85"
    assert limits.check_text("report", text, limits.REPORT_MAX) == text
    with pytest.raises(InputError) as info:
        limits.check_text("report", "Dr. SMITH\x00 saw", limits.REPORT_MAX)
    assert str(info.value) == "report contains a NUL byte at character 10"


def test_non_ascii_is_not_a_control_character() -> None:
    value = "Ünïcödé-研究-🙂\u00a0\u2028"
    assert limits.check_code("study_id", value) == value


def test_counts_and_batch_names() -> None:
    limits.check_count("flags", limits.FLAGS_MAX, limits.FLAGS_MAX)
    with pytest.raises(InputError, match=r"^flags has 150 entries \(limit 16\)$"):
        limits.check_count("flags", 150, limits.FLAGS_MAX)
    assert limits.check_batch_name("b" * limits.BATCH_NAME_MAX)
    for bad, reason in [
        ("", "empty"),
        ("  ", "empty"),
        ("b" * 65, "65 characters long"),
        ("2026\x0011", "NUL byte"),
    ]:
        with pytest.raises(InputError, match=reason):
            limits.check_batch_name(bad)


def test_display_escapes_and_cuts() -> None:
    assert limits.display("a\nb\x00c") == "a\\x0ab\\x00c"
    assert limits.display("x" * 300, 10) == "x" * 9 + "…"


def test_the_readme_states_every_limit() -> None:
    """The README's table of limits is the code's (a changed limit must be documented)."""
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| value | limit | why |") :].split("\n\n")[0]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines()}
    expected = {
        "`study_id`, `patient_id`, accession": f"{limits.ID_MAX:,}",
        "`image_path`": f"{limits.PATH_MAX:,}",
        "`modality`, `body_part`, `view`, `age`, `sex`, `study_date`": f"{limits.CODE_MAX:,}",
        "`flags`": f"{limits.FLAGS_MAX} flags of {limits.CODE_MAX}",
        "`findings`, `impression`, `report`": f"{limits.REPORT_MAX:,} each",
        "extra column value / name": (
            f"{limits.ATTRIBUTE_VALUE_MAX:,} / {limits.ATTRIBUTE_KEY_MAX}"
        ),
        "batch name (`--batch`)": f"{limits.BATCH_NAME_MAX}",
    }
    assert {k: rows.get(k) for k in expected} == expected, rows
