"""Reading a CSV manifest into source rows under casebase's column names.

A manifest that cannot be read at all (not UTF-8, no header, a required column
missing) stops the batch before anything loads: ``ManifestError``. Bad *rows*
are not this module's business: they become rejects later.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from casebase.errors import InputError, ManifestError

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


@dataclass(frozen=True)
class SourceRow:
    """One manifest row (or one DICOM file) under casebase's names; extras are attributes."""

    source: str
    row_ref: str
    fields: dict[str, str]
    attributes: dict[str, str]
    base_dir: Path


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


def read_manifest(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    images_root: str | Path | None = None,
) -> list[SourceRow]:
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
    names = []
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
    base = Path(images_root) if images_root else path.parent
    rows = []
    try:
        start = reader.line_num + 1
        for values in reader:
            line_no, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            fields: dict[str, str] = {}
            attributes: dict[str, str] = {}
            for raw, column, cell in zip(header, names, values, strict=False):
                value = cell.strip()
                if column is None:
                    if value:
                        attributes[raw.strip()] = value
                elif value and not fields.get(column):
                    fields[column] = value
            rows.append(SourceRow(str(path), f"line {line_no}", fields, attributes, base))
    except csv.Error as exc:
        raise ManifestError(f"manifest {path.name} is not valid CSV: {exc}") from exc
    return rows
