"""The labeller's version: bumped with its data, stored with each finding, picked up by relabel."""

from __future__ import annotations

from casebase.db.connection import connect
from casebase.synthesis import LABELLER_VERSION
from casebase.synthesis.cues import conventions_digest, load_cues
from casebase.synthesis.lexicon import load_lexicon

# The data each labeller version was released with (sha256 prefixes of lexicon.yaml and
# cues.yaml). A change to either file must come with a new LABELLER_VERSION, so that
# `casebase relabel` can tell stored findings of the old rules from the new ones.
RELEASED = {
    "rules-2.0": ("c23d6698c411", "19b87899d379"),
    "rules-2.1": ("a934634776d8", "19b87899d379"),
    "rules-2.2": ("e6eac4d9aca6", "19b87899d379"),
}


# conventions.yaml's digest per labeller version (introduced with rules-2.1): a
# convention is a reading of the cues, so a change to it is a change of the labeller.
RELEASED_CONVENTIONS = {"rules-2.1": "ab2030dd2d7a", "rules-2.2": "ab2030dd2d7a"}


def test_data_changes_come_with_a_version_bump() -> None:
    digests = (load_lexicon().digest, load_cues().digest)
    assert RELEASED.get(LABELLER_VERSION) == digests, (
        f"lexicon.yaml or cues.yaml changed (digests {digests}): bump LABELLER_VERSION in "
        "casebase/synthesis/extract.py and record the new digests in RELEASED"
    )
    assert RELEASED_CONVENTIONS.get(LABELLER_VERSION) == conventions_digest(), (
        "conventions.yaml changed: bump LABELLER_VERSION and record its digest"
    )


def test_relabel_replaces_findings_of_an_older_labeller(cohort_url: str) -> None:
    from casebase.synthesis.store import relabel

    query = (
        "SELECT study_pk, finding, status, version FROM casebase.finding "
        "WHERE backend = 'rules' ORDER BY 1, 2"
    )
    with connect(cohort_url) as conn:
        current = conn.execute(query).fetchall()
        assert current and {r[3] for r in current} == {LABELLER_VERSION}
        conn.execute("UPDATE casebase.finding SET version = 'rules-1.1' WHERE backend = 'rules'")
        conn.commit()
        n_reports, n_findings = relabel(conn)
        after = conn.execute(query).fetchall()
    assert n_reports == 80 and n_findings == len(current)
    assert after == current  # same findings, stamped with the current version again
