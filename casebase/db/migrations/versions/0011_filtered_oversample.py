"""A filtered HNSW walk asks the graph for more passing rows than it returns (issue #15).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

``similar_to_vector`` reads ``filtered_oversample`` from the leaf's ``tune.<leaf>`` row
(written by ``casebase tune``; 1 when absent, i.e. 0010's behaviour) and, when a filter
takes the graph route, asks the scan for that many times the rows it returns: pgvector's
iterative scan stops once the LIMIT's rows have passed the filter, and those were read
from the edge of the beam (recall 0.979 at 10 % selectivity on a 700k-row leaf, 0.991
with 1.5 x). Only the function changes; the downgrade puts 0010's back and leaves the
setting rows, which 0010 ignores.
"""

from collections.abc import Sequence

from casebase.db import replaceable

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    replaceable.install("similar_to_vector", revision)


def downgrade() -> None:
    replaceable.reinstall_previous("similar_to_vector", before=revision)
