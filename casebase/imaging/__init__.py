"""What an image is: reading image and DICOM files, pixel conversion, quality statistics,
and the coded values (sex, modality, view, finding status) every layer agrees on.

The leaf of the package: it imports nothing of casebase but ``config`` and ``errors``, so
that ingest, retrieval, training and the database schema can all use it without importing
each other. Importing this package is cheap: numpy, Pillow and pydicom are loaded by the
submodules that need them.
"""

from casebase.imaging.vocabulary import (
    FLAG_PATTERN,
    MAX_AGE_YEARS,
    MODALITY_CODE_PATTERN,
    STATUSES,
    Modality,
    Sex,
    Status,
    View,
)

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
