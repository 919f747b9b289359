"""The HTML brief: self-contained, escaped, accessible, and drawn by a real browser."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from casebase.retrieval.hits import Hit
from casebase.synthesis.aggregate import aggregate
from casebase.synthesis.brief import DISCLAIMER, Brief
from casebase.synthesis.brief_html import encode_thumbnail
from tests.browser import render

EVIL = '<script>alert("x")</script>'


def _hits() -> list[Hit]:
    return [
        Hit(
            rank=i + 1,
            study_id=f"S{i}" if i else f"S0{EVIL}",
            distance=0.1 + i / 100,
            modality="CXR",
            age=40.0 + i,
            sex="F" if i % 2 else "M",
            view="PA",
            flags=("portable",) if i == 2 else (),
            impression=f"Right pleural effusion {i}." if i < 3 else f"Clear lungs {EVIL}",
        )
        for i in range(6)
    ]


def _brief(hits: list[Hit]) -> Brief:
    findings = {h.study_id: {} for h in hits[:5]}
    for h in hits[:3]:
        findings[h.study_id]["pleural_effusion"] = "present"
    findings[hits[1].study_id]["cardiomegaly"] = "present"
    findings[hits[0].study_id]["cardiomegaly"] = "present"
    findings[hits[3].study_id]["pneumonia"] = "uncertain"
    findings[hits[4].study_id]["pleural_effusion"] = "absent"
    return Brief.create(
        aggregate(hits, findings),
        k=6,
        query="study Q-1",
        filters={"modality": "CXR"},
        space="tiny-random",
        model="tiny",
    )


def _thumbs(hits: list[Hit]) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        h.study_id: encode_thumbnail(Image.fromarray(rng.integers(0, 255, (300, 240), np.uint8)))
        for h in hits[:-1]  # the last hit has no image: "image unavailable", not a failure
    }


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


def _page() -> tuple[str, list[Hit]]:
    hits = _hits()
    q = encode_thumbnail(Image.new("L", (500, 400), 128))
    return _brief(hits).render_html(hits, thumbnails=_thumbs(hits), query_thumbnail=q), hits


def test_page_is_self_contained_escaped_and_accessible() -> None:
    page, _ = _page()
    parser = _Collect()
    parser.feed(page)
    tags = parser.tags
    # Nothing from the network: every src is a data: URI, no link/script elements.
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object")]
    srcs = [a.get("src") or "" for t, a in tags if "src" in a]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs), srcs[:2]
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"(?i)(https?:|[\s\"'(]//)", text.replace("http-equiv", ""))
    # Data is escaped: the study id and impression never become markup.
    assert EVIL not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # Every image has alt text naming its study; the missing one says so with a role.
    imgs = [a for t, a in tags if t == "img"]
    assert len(imgs) == 6  # query + 5 hits with a thumbnail
    assert all(a.get("alt") for a in imgs)
    assert any("S1," in (a.get("alt") or "") for a in imgs)
    assert 'role="img" aria-label="Film of study S5' in page
    # The chart is a table with a caption and header cells, ids behind each count.
    assert sum(1 for t, _ in tags if t == "caption") == 2
    assert sum(1 for t, a in tags if t == "th" and a.get("scope") == "row") >= 4
    assert "<details><summary>3 present</summary><ul><li>S0&lt;script" in page
    assert page.count(DISCLAIMER) == 2
    assert "pleural effusion and cardiomegaly" in page  # the co-occurrence row


def test_thumbnail_rejects_unknown_bytes() -> None:
    hits = _hits()
    with pytest.raises(ValueError, match="PNG or JPEG"):
        _brief(hits).render_html(hits, thumbnails={"S1": b"GIF89a..."})


def test_chromium_draws_the_page_without_console_errors(tmp_path: Path) -> None:
    page, _ = _page()
    path = tmp_path / "brief.html"
    path.write_text(page, encoding="utf-8")
    shown = render(path, tmp_path)
    assert shown.console == [], shown.console
    pixels = np.asarray(Image.open(shown.screenshot).convert("L"), dtype=np.float32)
    # Not blank: text, thumbnails and bars put many non-white pixels on the page.
    assert (pixels < 200).mean() > 0.05, (pixels < 200).mean()
    assert pixels.std() > 20, pixels.std()


def test_cli_writes_a_page_with_every_hits_film(cohort_url, monkeypatch, tmp_path, capsys):
    from casebase.cli import main

    monkeypatch.setenv("DATABASE_URL", cohort_url)
    out = tmp_path / "brief.html"
    assert main(["brief", "--study", "DEMO-C0007", "-k", "8", "--html", str(out)]) == 0
    captured = capsys.readouterr()
    assert "not a diagnosis" in captured.out.lower()  # the text brief still prints
    assert f"HTML brief written to {out}" in captured.err
    page = out.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(page)
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) == 9, len(imgs)  # the query's film and the 8 hits' films
    assert "image unavailable" not in page
    ids = re.findall(r"<h3>#\d+ (DEMO-[CK]\d{4})</h3>", page)
    assert len(ids) == 8 and "DEMO-C0007" not in ids, ids
    shown = render(out, tmp_path)
    assert shown.console == [], shown.console


def test_python_client_returns_the_page(cohort_url):
    from casebase.client import connect

    with connect(cohort_url) as client:
        hits = client.search(study_id="DEMO-C0003", k=4)
        brief = client.brief(hits, query="study DEMO-C0003")
        page = client.brief_html(brief, hits, study_id="DEMO-C0003")
    assert page.startswith("<!DOCTYPE html>") and page.count("<img ") == 5
    assert all(h.study_id in page for h in hits)


@pytest.mark.parametrize(
    ("where", "message"),
    [("missing/brief.html", "does not exist"), (".", "it is a folder")],
)
def test_html_path_errors_are_one_line_before_any_search(
    tmp_path, monkeypatch, capsys, where, message
):
    from casebase.cli import main

    # No database at all: the path is checked first, so the error is the path's.
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["brief", "--study", "X", "--html", str(tmp_path / where)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("casebase: error: cannot write the HTML brief") and message in err
    assert len(err.splitlines()) == 1, err
