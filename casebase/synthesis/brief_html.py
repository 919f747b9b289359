"""The brief as one self-contained HTML page: the cases to look at, and the counts.

A radiologist would rather look at the similar cases than read about them, so the page
shows the query film and the top hits as thumbnails (distance, age, sex, view, flags,
impression), then the findings as a bar chart of present / uncertain / absent with the
study ids behind every bar, the co-occurrences, and the decision-support disclaimer.

Decisions, and why:

* **One file, no network.** Images are inlined as ``data:`` URIs and the style sheet is
  inline; a Content-Security-Policy forbids every other source, so the page can be
  mailed, archived or opened on a workstation without internet, and leaks nothing.
  There is no script at all: nothing to break, nothing to audit.
* **Accessible by construction.** The chart *is* a table (``<table>`` with a caption,
  column headers and row headers), the bars are decoration over the numbers (hidden from
  screen readers, which read the cells), each image has alt text that says which study it
  is, and the study ids behind a bar sit in a ``<details>`` element, which browsers make
  keyboard-operable without any code.
* **Everything is escaped.** Study ids, impressions and finding names come from data a
  manifest author wrote; ``html.escape`` is applied to every one of them.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.errors import InputError
from casebase.synthesis.aggregate import FindingCount
from casebase.synthesis.disclaimer import DISCLAIMER

if TYPE_CHECKING:
    from casebase.retrieval.hits import Hit
    from casebase.synthesis.brief import Brief

__all__ = ["THUMBNAIL_PX", "encode_thumbnail", "output_path", "render_html"]

THUMBNAIL_PX = 192
_MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem;
       padding: 0 1rem; color: #111; background: #fff; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.summary { font-size: 1.05rem; }
.disclaimer { border: 2px solid #8a5a00; background: #fff6e0; padding: .6rem .9rem; }
.cases { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr));
         gap: 1rem; list-style: none; padding: 0; }
.case { border: 1px solid #999; border-radius: 4px; padding: .5rem; }
.case.query { border: 3px solid #1f5fbf; }
.case img { display: block; width: 100%; height: 12rem; object-fit: contain;
            background: #000; }
.noimg { height: 12rem; display: flex; align-items: center; justify-content: center;
         background: #eee; color: #333; }
.case dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .5rem; margin: .4rem 0; }
.case dt { font-weight: 600; } .case dd { margin: 0; }
.impression { font-size: .9rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #bbb; padding: .3rem .5rem; text-align: left;
         vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: flex; width: 16rem; height: 1rem; background: #eee; }
.bar span { display: block; height: 100%; }
.present { background: #b3261e; } .uncertain { background: #e8a317; }
.absent { background: #4a7fb5; }
.legend span { display: inline-block; width: .9rem; height: .9rem; margin: 0 .3rem 0 1rem;
               vertical-align: middle; }
a:focus, summary:focus { outline: 3px solid #1f5fbf; outline-offset: 2px; }
"""


def output_path(path: str | Path) -> Path:
    """Where an HTML brief goes, checked before any search runs: its folder must exist
    (no silent ``mkdir -p`` of a typo) and it must not be a folder itself."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"cannot write the HTML brief to {out}: it is a folder; give a file name")
    if not out.parent.is_dir():
        raise InputError(
            f"cannot write the HTML brief to {out}: folder {out.parent} does not exist"
        )
    return out


def encode_thumbnail(image, *, size: int = THUMBNAIL_PX) -> bytes:
    """A PIL image as a small PNG, for inlining: films are large and a page of 50
    full-size films would weigh hundreds of megabytes."""
    from io import BytesIO

    from PIL import ImageOps

    thumb = ImageOps.contain(
        image.convert("L" if image.mode in ("L", "I;16", "I") else "RGB"), (size, size)
    )
    out = BytesIO()
    thumb.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _data_uri(data: bytes) -> str:
    mime = next((m for magic, m in _MIME.items() if data.startswith(magic)), None)
    if mime is None:
        raise ValueError("thumbnails must be PNG or JPEG bytes")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _label(finding: str, labels: Mapping[str, str] | None) -> str:
    return (labels or {}).get(finding) or finding.replace("_", " ")


def _image(data: bytes | None, alt: str) -> str:
    if data is None:
        return f'<div class="noimg" role="img" aria-label="{_e(alt)}">image unavailable</div>'
    return f'<img src="{_data_uri(data)}" alt="{_e(alt)}">'


def _facts(hit: Hit) -> str:
    rows = [
        ("distance", f"{hit.distance:.4f}"),
        ("age", "—" if hit.age is None else f"{hit.age:g}"),
        ("sex", hit.sex or "—"),
        ("view", hit.view or "—"),
        ("flags", ", ".join(hit.flags) or "none"),
    ]
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows) + "</dl>"


def _case(hit: Hit, thumbnail: bytes | None) -> str:
    alt = f"Film of study {hit.study_id}, rank {hit.rank}, cosine distance {hit.distance:.3f}"
    impression = " ".join((hit.impression or "no report").split())
    return (
        f'<li class="case"><h3>#{hit.rank} {_e(hit.study_id)}</h3>'
        f"{_image(thumbnail, alt)}{_facts(hit)}"
        f'<p class="impression"><strong>Impression:</strong> {_e(impression)}</p></li>'
    )


def _ids(ids: Sequence[str], what: str) -> str:
    if not ids:
        return "—"
    items = "".join(f"<li>{_e(i)}</li>" for i in ids)
    return f"<details><summary>{len(ids)} {_e(what)}</summary><ul>{items}</ul></details>"


def _bar(c: FindingCount, n: int) -> str:
    parts = [("present", c.present), ("uncertain", c.uncertain), ("absent", c.absent)]
    spans = "".join(
        f'<span class="{k}" style="width:{100 * v / n:.2f}%"></span>' for k, v in parts if v
    )
    return f'<div class="bar" aria-hidden="true">{spans}</div>'


def _findings(brief: Brief, labels: Mapping[str, str] | None) -> str:
    agg = brief.aggregate
    if not agg.counts:
        return "<p>No report of these cases mentions a finding the labeller knows.</p>"
    n = max(agg.n_with_report, 1)
    rows = []
    for c in agg.counts:
        rows.append(
            f'<tr><th scope="row">{_e(_label(c.finding, labels))}</th>'
            f"<td>{_bar(c, n)}</td>"
            f'<td class="num">{c.present}</td><td>{_ids(c.present_ids, "present")}</td>'
            f'<td class="num">{c.uncertain}</td><td>{_ids(c.uncertain_ids, "uncertain")}</td>'
            f'<td class="num">{c.absent}</td><td>{_ids(c.absent_ids, "absent")}</td></tr>'
        )
    legend = "".join(
        f'<span class="{k}" aria-hidden="true"></span>{k}'
        for k in ("present", "uncertain", "absent")
    )
    return (
        f'<p class="legend" aria-hidden="true">{legend}</p>'
        f"<table><caption>Findings in the {agg.n_with_report} reports of the similar cases: "
        "present, uncertain and absent mentions, with the study ids behind each count"
        "</caption><thead><tr><th scope='col'>finding</th><th scope='col'>chart</th>"
        "<th scope='col'>present</th><th scope='col'>present: study ids</th>"
        "<th scope='col'>uncertain</th><th scope='col'>uncertain: study ids</th>"
        "<th scope='col'>absent</th><th scope='col'>absent: study ids</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cooccurrence(brief: Brief, labels: Mapping[str, str] | None) -> str:
    pairs = brief.aggregate.cooccurrence
    if not pairs:
        return "<p>No two findings are present together in these reports.</p>"
    rows = "".join(
        f"<tr><th scope='row'>{_e(_label(c.a, labels))} and {_e(_label(c.b, labels))}</th>"
        f"<td class='num'>{c.count}</td><td>{_ids(c.study_ids, 'studies')}</td></tr>"
        for c in pairs
    )
    return (
        "<table><caption>Findings present together in one report</caption>"
        "<thead><tr><th scope='col'>findings</th><th scope='col'>reports</th>"
        f"<th scope='col'>study ids</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_html(
    brief: Brief,
    hits: Sequence[Hit],
    *,
    thumbnails: Mapping[str, bytes] | None = None,
    query_thumbnail: bytes | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """The page for ``brief`` and its ``hits`` (rank order). ``thumbnails`` maps a study
    id to PNG/JPEG bytes (see :func:`encode_thumbnail`); a hit without one shows
    "image unavailable", so a missing file never stops the brief."""
    thumbs = thumbnails or {}
    query_alt = f"Query film: {brief.query}"
    cards = "".join(_case(h, thumbs.get(h.study_id)) for h in hits)
    summary = brief.summary(labels=labels)
    notes = "".join(f"<li>{_e(n)}</li>" for n in brief.notes)
    narrative = f"<h2>Narrative</h2><p>{_e(brief.narrative)}</p>" if brief.narrative else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>casebase brief: {_e(brief.query)}</title>
<style>{_STYLE}</style>
</head>
<body>
<main>
<h1>Similar cases for {_e(brief.query)}</h1>
<p class="disclaimer" role="note"><strong>{_e(DISCLAIMER)}</strong></p>
<p>Model {_e(brief.model)}, space {_e(brief.space)}, generated {_e(brief.generated_at)}.</p>
<p class="summary">{_e(summary)}</p>
<h2 id="cases">The query and its {len(hits)} most similar cases</h2>
<ul class="cases" aria-labelledby="cases">
<li class="case query"><h3>Query</h3>{_image(query_thumbnail, query_alt)}
<p>{_e(brief.query)}</p></li>
{cards}
</ul>
<h2>What their reports say</h2>
{_findings(brief, labels)}
<h2>Findings reported together</h2>
{_cooccurrence(brief, labels)}
{narrative}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<p class="disclaimer" role="note">{_e(DISCLAIMER)}</p>
</main>
</body>
</html>
"""
