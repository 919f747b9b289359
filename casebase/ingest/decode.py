"""What a decode worker does for one image: bytes → hash, pixels, quality (and report).

Runs in DataLoader worker processes (so it is a module-level function), which keeps
hashing, decoding, quality statistics and the study's report (sanitising and rule
labelling, carried by the study's first image) off the process running the model. On a
CPU host the workers run at a lower priority than the model and fill its idle gaps; in
the model's process the same work would stall the model's threads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

from casebase.errors import InputError
from casebase.imaging.files import read_image_file
from casebase.imaging.images import load_image
from casebase.imaging.quality import measure_quality, quality_flags
from casebase.ingest.studies import ImageInput
from casebase.synthesis.cues import STRICT

if TYPE_CHECKING:
    from casebase.ingest.sanitize import SanitizedReport
    from casebase.synthesis.evidence import LabelledFinding

#: A study's report as the manifest gave it: ``(findings, impression, report)``.
ReportParts = tuple[object, object, object]


@dataclass(frozen=True)
class ReportFacts:
    """A study's sanitised report and the rule findings labelled on it."""

    sanitized: SanitizedReport
    findings: list[LabelledFinding] = field(default_factory=list)


@dataclass(frozen=True)
class ImageFacts:
    sha256: str
    size_bytes: int
    width: int
    height: int
    quality: dict
    flags: tuple[str, ...]
    report: ReportFacts | None = None  # on a study's first image, when it has a report


def prepare_report(
    findings: object, impression: object, report: object, convention: str = STRICT
) -> ReportFacts:
    """Sanitise a report and label its findings (the shared labeller of synthesis, read
    under the installation's coding ``convention``).

    A report the labeller fails on raises ``InputError`` (its study becomes a reject
    with that reason); a labeller that cannot load at all fails in ``warm_labeller``
    before the batch starts.
    """
    from casebase.ingest.sanitize import sanitize_report
    from casebase.synthesis.evidence import labelled_findings

    sanitized = sanitize_report(findings=findings, impression=impression, report=report)
    try:
        labelled = labelled_findings(
            sanitized.findings, sanitized.impression, convention=convention
        )
    except Exception as exc:
        # The error's message may quote the report: the reason names its type only.
        raise InputError(f"report could not be labelled ({type(exc).__name__})") from exc
    return ReportFacts(sanitized, labelled)


def warm_labeller(convention: str = STRICT) -> None:
    """Load spaCy, the lexicon and the cue matchers now (about a second, once per
    process): a missing or broken labeller stops the batch before it starts, and forked
    decode workers inherit it loaded instead of each loading it."""
    from casebase.synthesis.evidence import labelled_findings

    labelled_findings("No pleural effusion.", None, convention=convention)


def grey_if_equal(image: Image.Image) -> Image.Image:
    """An RGB image whose three bands are equal as its one band (``L``), else unchanged.

    Most radiographs are stored as RGB with R = G = B. As ``L`` they cost a third to
    resize, and give the same quality statistics (grey conversion of R = G = B is exact)
    and, with an ``Encoder`` whose ``Preprocess.grey_ok``, the very same tensor.
    """
    if image.mode != "RGB":
        return image
    red, green, blue = image.split()
    red_bytes = red.tobytes()
    if red_bytes == green.tobytes() and red_bytes == blue.tobytes():
        return red
    return image


def decode_image(item: tuple):
    """``(image, modality[, report parts[, convention]])`` → ``(PIL image, ImageFacts)``.

    The image is RGB, or ``L`` for a grey one (``Preprocess`` converts it to RGB when
    its transform needs that).

    Raises InputError for bad files. The file is read once: the bytes hashed are the
    bytes decoded. ``report parts`` (``(findings, impression, report)`` or None) are
    sanitised and labelled into ``ImageFacts.report``.
    """
    image_input: ImageInput = item[0]
    modality: str = item[1]
    report_parts: ReportParts | None = item[2] if len(item) > 2 else None
    convention: str = item[3] if len(item) > 3 else STRICT
    data = read_image_file(image_input.path)
    image = grey_if_equal(load_image(image_input.path, data=data, keep_grey=True))
    quality = measure_quality(image)
    facts = ImageFacts(
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        width=image.width,
        height=image.height,
        quality=quality.as_dict(),
        flags=quality_flags(quality, modality=modality),
        report=(
            prepare_report(*report_parts, convention=convention)
            if report_parts is not None
            else None
        ),
    )
    return image, facts
