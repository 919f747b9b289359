"""Reading a CSV manifest into source rows under casebase's column names.

A manifest that cannot be read at all (not UTF-8, no header, a required column
missing, a quoted field never closed) stops the batch before anything loads:
``ManifestError``. Bad *rows* are not this module's business: they become rejects later
(a row this module cannot place, e.g. one with more fields than the header, carries a
``problem`` for that). The csv module's field size limit (128 kB) is lifted: a long
field is judged by the limits of :mod:`casebase.imaging.limits`, as one row's reject,
not as an unreadable manifest.

Columns that are not casebase's own ("extra" columns) are kept in two ways: all of them
as received in ``raw_attributes`` (stored in a table analysts cannot read), and those
named by the allow-list (``--attributes``; by default :data:`DEFAULT_ATTRIBUTES`) in
``attributes``, which reach ``casebase.studies.attributes`` after the sanitiser.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from casebase.errors import InputError, ManifestError
from casebase.imaging.limits import ATTRIBUTE_KEY_MAX, check_code

REQUIRED = ("study_id", "image_path")
KNOWN = (
    "study_id",
    "image_path",
    "patient_id",
    "modality",
    "body_part",
    "view",
    "age",
    "sex",
    "study_date",
    "findings",
    "impression",
    "report",
    "flags",
)
ALIASES = {"observation": "findings", "conclusion": "impression"}

#: Extra columns shown to analysts when ``--attributes`` is not given: label columns, which
#: ``casebase train --text label:COLUMN`` and ``casebase eval --label COLUMN`` read (the
#: demo cohort's ``label``, the covid set's ``finding``). Their values still go through
#: the sanitiser.
DEFAULT_ATTRIBUTES = ("label", "finding")

#: csv's own limit on one field (128 kB by default) would make a manifest with one long
#: note unreadable; fields are judged by casebase's limits instead.
_CSV_FIELD_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class SourceRow:
    """One manifest row (or one DICOM file) under casebase's names.

    ``attributes``: the extra columns on the allow-list, as received (the sanitiser runs
    later); ``raw_attributes``: every extra column as received. ``base_dir`` is where
    ``image_path`` is relative to, and with ``confined`` the root it must stay inside.
    ``problem``: why the row cannot be used at all (it becomes a reject).
    """

    source: str
    row_ref: str
    fields: dict[str, str]
    attributes: dict[str, str]
    base_dir: Path
    raw_attributes: dict[str, str] = field(default_factory=dict)
    confined: bool = True
    problem: str | None = None


def parse_column_map(spec: str | None) -> dict[str, str]:
    """``"patientid=patient_id,clinical_notes=report"`` → {site header: casebase name}."""
    mapping: dict[str, str] = {}
    if not spec:
        return mapping
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"--columns entry {part.strip()!r} is not HEADER=NAME")
        header, name = (p.strip() for p in part.split("=", 1))
        name = ALIASES.get(name, name)
        if name not in KNOWN:
            raise InputError(
                f"--columns maps {header!r} to unknown name {name!r} (known: {', '.join(KNOWN)})"
            )
        mapping[header] = name
    return mapping


def parse_attribute_list(spec: str | None) -> tuple[str, ...] | None:
    """``"finding,location"`` → the allow-list; None (not given) → the default list;
    ``""`` or ``"none"`` → no extra column at all."""
    if spec is None:
        return None
    if spec.strip().lower() == "none":
        return ()
    return tuple(p.strip() for p in spec.split(",") if p.strip())


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(
            f"manifest {path.name} is not UTF-8 (line {line}: byte 0x{data[exc.start]:02x}); "
            "re-save it as UTF-8"
        ) from exc


def _allowed_columns(
    path: Path, header: list[str], names: list[str | None], allow: Collection[str] | None
) -> set[int]:
    """Indexes of the extra columns on the allow-list; an explicit list must name extra
    columns of this manifest (a typo would silently publish nothing)."""
    pairs = enumerate(zip(header, names, strict=True))
    extras = {h.strip().lower(): i for i, (h, n) in pairs if n is None}
    if allow is None:
        return {extras[a] for a in DEFAULT_ATTRIBUTES if a in extras}
    chosen = set()
    for name in allow:
        key = name.strip().lower()
        if key in extras:
            chosen.add(extras[key])
            continue
        why = "a casebase column, not an extra one" if key in names else "not a column"
        raise ManifestError(f"--attributes names {name!r}: in manifest {path.name} it is {why}")
    return chosen


def _header_problems(header: list[str], names: list[str | None]) -> dict[int, str]:
    """Extra columns whose name cannot be an attribute key: a row with a value there is
    rejected (the value cannot be stored under its name)."""
    problems = {}
    for i, (raw, name) in enumerate(zip(header, names, strict=True)):
        if name is None:
            try:
                check_code(f"the name of column {i + 1}", raw.strip(), ATTRIBUTE_KEY_MAX)
            except InputError as exc:
                problems[i] = str(exc)
    return problems


def _check_closed(path: Path, text: str, first_line: int) -> None:
    """A quoted field opened in the last row and never closed swallows the rest of the
    file into one value (csv does not complain): stop instead of losing the rows."""
    lines = io.StringIO(text, newline="").readlines()[first_line - 1 :]
    try:
        for _ in csv.reader(lines, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise ManifestError(
                f"manifest {path.name}: the quoted field that starts on line {first_line} "
                "is never closed (a missing '\"')"
            ) from exc


def read_manifest(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    images_root: str | Path | None = None,
    attributes: Collection[str] | None = None,
    confined: bool = True,
) -> list[SourceRow]:
    """The manifest's rows. ``attributes``: the allow-list of extra columns (None: the
    default list); ``confined``: image paths must stay inside the images root."""
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    path = Path(path)
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"manifest {path.name} is empty") from None
    except csv.Error as exc:
        raise ManifestError(f"manifest {path.name} is not valid CSV: {exc}") from exc
    columns = columns or {}
    names: list[str | None] = []
    for raw in header:
        key = raw.strip()
        name = columns.get(key) or ALIASES.get(key.lower(), key.lower())
        names.append(name if name in KNOWN else None)
    unknown = set(columns) - {h.strip() for h in header}
    if unknown:
        raise ManifestError(
            f"manifest {path.name} has no column {sorted(unknown)[0]!r} named in --columns"
        )
    missing = [r for r in REQUIRED if r not in names]
    if missing:
        raise ManifestError(
            f"manifest {path.name} lacks the required column {missing[0]!r} "
            f"(columns: {', '.join(h.strip() for h in header)}; map yours with --columns)"
        )
    allowed = _allowed_columns(path, header, names, attributes)
    bad_names = _header_problems(header, names)
    base = Path(images_root) if images_root else path.parent
    rows = []
    line_no = start = reader.line_num + 1
    try:
        for values in reader:
            line_no, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            fields: dict[str, str] = {}
            published: dict[str, str] = {}
            raw_attributes: dict[str, str] = {}
            problem = None
            if len(values) > len(header) and any(v.strip() for v in values[len(header) :]):
                problem = f"the row has {len(values)} fields, the header {len(header)}"
            for i, (raw, column, cell) in enumerate(zip(header, names, values, strict=False)):
                value = cell.strip()
                if column is None:
                    if value:
                        problem = problem or bad_names.get(i)
                        raw_attributes[raw.strip()] = value
                        if i in allowed:
                            published[raw.strip()] = value
                elif value and not fields.get(column):
                    fields[column] = value
            rows.append(
                SourceRow(
                    str(path),
                    f"line {line_no}",
                    fields,
                    published,
                    base,
                    raw_attributes=raw_attributes,
                    confined=confined,
                    problem=problem,
                )
            )
    except csv.Error as exc:
        raise ManifestError(f"manifest {path.name} is not valid CSV: {exc}") from exc
    if reader.line_num > line_no:  # the last record spans lines: was its quote closed?
        _check_closed(path, text, line_no)
    return rows
