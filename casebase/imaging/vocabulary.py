"""The coded values of casebase, defined once: sex, modality, view, finding status, and the
shapes of free codes (flags, modality codes) and the age range.

Every layer that names one of these values imports it from here: the parsers of
:mod:`casebase.imaging.values`, the schema's CHECK constraints (:mod:`casebase.db.models`),
search filters, the findings labeller and the CLI's choices. PL/pgSQL cannot import
Python, so the SQL functions keep their own checks; ``tests/test_vocabulary.py`` asserts
that they and the constraints agree with this module.

Pure data, no third-party import: importing it costs nothing.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = [
    "FLAG_PATTERN",
    "MAX_AGE_YEARS",
    "MODALITY_CODE_PATTERN",
    "STATUSES",
    "Modality",
    "Sex",
    "Status",
    "View",
]

#: Oldest plausible age in years; anything above is a data-entry error, not a patient.
MAX_AGE_YEARS = 130.0

#: A flag (``portable``, ``burned_in_text``): a lower-case snake token of at most 64
#: characters. Flags are filter values, so a typo would silently never match.
FLAG_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

#: What a modality code may look like in a filter or a partition name. Wider than
#: :class:`Modality` on purpose: it is a safe identifier, checked before any SQL runs
#: (``casebase.ensure_embedding_partition`` checks the same pattern).
MODALITY_CODE_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{0,15}$")


class Sex(StrEnum):
    """DICOM Patient's Sex (0010,0040): M, F, O (other). Unknown is stored as NULL."""

    MALE = "M"
    FEMALE = "F"
    OTHER = "O"


class Modality(StrEnum):
    """The modality vocabulary of casebase: one embedding partition per value.

    Radiographs are split by body part because a chest and a knee film must never be
    neighbours (seed 000, failure mode 4); other modalities keep their DICOM code.
    """

    CXR = "CXR"  # chest radiograph (CR/DX/DR + chest, thorax, lung)
    KXR = "KXR"  # knee radiograph
    XR = "XR"  # any other radiograph, or one whose body part is not recorded
    CT = "CT"
    MR = "MR"
    US = "US"
    MG = "MG"  # mammography
    NM = "NM"  # nuclear medicine
    PT = "PT"  # PET
    XA = "XA"  # angiography / fluoroscopy


class View(StrEnum):
    """Projection / plane of an image. DICOM View Position terms and manifest words map here."""

    PA = "PA"
    AP = "AP"
    AP_SUPINE = "AP_SUPINE"  # bedside/portable film: different magnification and findings
    LATERAL = "LATERAL"
    DECUBITUS = "DECUBITUS"
    OBLIQUE = "OBLIQUE"
    AXIAL = "AXIAL"
    CORONAL = "CORONAL"
    SAGITTAL = "SAGITTAL"
    CC = "CC"  # mammography cranio-caudal
    MLO = "MLO"  # mammography medio-lateral oblique


class Status(StrEnum):
    """What a report says about a finding, strongest first: a study with several mentions
    of one finding keeps the first of these (present > uncertain > absent)."""

    PRESENT = "present"
    UNCERTAIN = "uncertain"
    ABSENT = "absent"


#: The finding statuses as plain strings, strongest first (JSON schemas, SQL, counts).
STATUSES: tuple[str, ...] = tuple(status.value for status in Status)
