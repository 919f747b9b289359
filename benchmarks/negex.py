"""Score casebase's assertion rules on the NegEx test set (negated vs not).

    python benchmarks/negex.py [--data PATH] [--json] [--engine casebase|negspacy|medspacy]
                               [--show-errors odd|radiology-odd] [--final] [--n 20]

Each of the 2,376 rows names a target condition in one sentence and a physician's label,
affirmed or negated (``../shared/data/negex/README.md``). The benchmark finds the target in
the sentence (the upper-cased occurrence where the source marked one; else every
occurrence; where the source cut the sentence inside the target, the longest run of the
target's words that does occur) and asks the assertion rules about that span. The lexicon
need not know the condition. A row is predicted negated when the rules say "absent"; the
set has no uncertain class (hedged mentions are gold affirmed), so "uncertain" and
"hypothetical" count as not negated, as the README says. Where a row has several candidate
spans the most negative status is kept, as the NegEx kit does.

The rows are split for honest tuning: the odd ids are the development half, the even ids
the test half. Individual errors are listed only for the development half unless
``--final`` is given (rules are final; reading test errors before that makes the test
number meaningless). The radiology rows (report type RAD) come from both halves.

``--engine negspacy`` and ``--engine medspacy`` score those libraries on the same spans
(they must be installed; they are not project dependencies), for comparison only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data" / "negex" / "negex_test.tsv"

# GenNegEx v1.2 on all 2,376 rows, from its kit output (CallKit.results): TP 471, false
# negated 23, possible 10 (all gold affirmed), FN 20; "possible" counted as not negated.
GENNEGEX = {"precision": 0.953, "recall": 0.959, "f1": 0.956}

# Status order for "the most negative status" of a row with several candidate spans.
_NEGATIVITY = {"absent": 3, "uncertain": 2, "hypothetical": 1, "present": 0}
STATUSES = ("present", "hypothetical", "uncertain", "absent")


@dataclass(frozen=True)
class Row:
    id: int
    target: str
    sentence: str
    negated: bool
    report_type: str


def read_rows(path: Path) -> list[Row]:
    """The TSV rows (plain tab-separated, a header, no quoting: see the set's README)."""
    rows: list[Row] = []
    with path.open(encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        for line in fh:
            rec = dict(zip(header, line.rstrip("\n").split("\t"), strict=True))
            if rec["gold"] not in ("affirmed", "negated"):
                raise ValueError(f"row {rec['id']}: unknown gold label {rec['gold']!r}")
            rows.append(
                Row(
                    id=int(rec["id"]),
                    target=rec["target"],
                    sentence=rec["sentence"],
                    negated=rec["gold"] == "negated",
                    report_type=rec["report_type"],
                )
            )
    return rows


def _occurrences(words: list[str], sentence: str) -> list[tuple[int, int]]:
    pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
    return [(m.start(), m.end()) for m in re.finditer(pattern, sentence, re.IGNORECASE)]


def _prefer_marked(spans: list[tuple[int, int]], sentence: str) -> list[tuple[int, int]]:
    """The occurrences the source upper-cased, when that singles some out."""
    marked = [(s, e) for s, e in spans if sentence[s:e].isupper()]
    return marked if marked and len(marked) < len(spans) else spans


def locate(target: str, sentence: str) -> list[tuple[int, int]]:
    """Character spans of the target in the sentence (see the module docstring)."""
    words = target.split()
    for n in range(len(words), 0, -1):
        found: list[tuple[int, int]] = []
        for i in range(len(words) - n + 1):
            found.extend(_occurrences(words[i : i + n], sentence))
        if found:
            return _prefer_marked(sorted(set(found)), sentence)
    return []


def casebase_engine() -> Callable[[str, int, int], str]:
    from casebase.synthesis.assertion import assert_span

    return lambda sentence, start, end: assert_span(sentence, start, end).status


def negspacy_engine() -> Callable[[str, int, int], str]:
    """negspaCy's NegEx (``en_clinical`` termset) on a blank pipeline with one entity."""
    import spacy
    from negspacy.negation import Negex  # noqa: F401  (registers the factory)
    from negspacy.termsets import termset

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe(
        "negex",
        config={"neg_termset": termset("en_clinical").get_patterns(), "ent_types": ["TARGET"]},
    )

    def decide(sentence: str, start: int, end: int) -> str:
        doc = nlp.make_doc(sentence)
        span = doc.char_span(start, end, label="TARGET", alignment_mode="expand")
        doc.ents = [span]
        for _name, proc in nlp.pipeline:
            doc = proc(doc)
        return "absent" if doc.ents[0]._.negex else "present"

    return decide


def medspacy_engine() -> Callable[[str, int, int], str]:
    """medspaCy's ConText with its default rules, on a blank pipeline with one entity."""
    import spacy
    from medspacy.context import ConText

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("medspacy_context")
    assert ConText  # imported for the factory it registers

    def decide(sentence: str, start: int, end: int) -> str:
        doc = nlp.make_doc(sentence)
        span = doc.char_span(start, end, label="TARGET", alignment_mode="expand")
        doc.ents = [span]
        for _name, proc in nlp.pipeline:
            doc = proc(doc)
        ent = doc.ents[0]
        if ent._.is_negated:
            return "absent"
        if ent._.is_hypothetical:
            return "hypothetical"
        if ent._.is_uncertain:
            return "uncertain"
        return "present"

    return decide


ENGINES = {"casebase": casebase_engine, "negspacy": negspacy_engine, "medspacy": medspacy_engine}


def decide_rows(rows: Iterable[Row], decide: Callable[[str, int, int], str]) -> dict[int, str]:
    """Row id -> the most negative status over the target's spans."""
    out: dict[int, str] = {}
    for row in rows:
        spans = locate(row.target, row.sentence)
        if not spans:
            raise ValueError(f"row {row.id}: target {row.target!r} not found in its sentence")
        out[row.id] = max((decide(row.sentence, s, e) for s, e in spans), key=_NEGATIVITY.get)
    return out


SUBSETS: dict[str, Callable[[Row], bool]] = {
    "odd ids (dev)": lambda r: r.id % 2 == 1,
    "even ids (test)": lambda r: r.id % 2 == 0,
    "radiology (RAD)": lambda r: r.report_type == "RAD",
    "radiology, odd ids": lambda r: r.report_type == "RAD" and r.id % 2 == 1,
    "radiology, even ids": lambda r: r.report_type == "RAD" and r.id % 2 == 0,
    "all": lambda r: True,
}


def score(rows: list[Row], statuses: dict[int, str]) -> dict[str, float]:
    tp = sum(1 for r in rows if r.negated and statuses[r.id] == "absent")
    fp = sum(1 for r in rows if not r.negated and statuses[r.id] == "absent")
    fn = sum(1 for r in rows if r.negated and statuses[r.id] != "absent")
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    confusion = Counter((("negated" if x.negated else "affirmed"), statuses[x.id]) for x in rows)
    return {
        "rows": len(rows),
        "negated": sum(r.negated for r in rows),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": p,
        "recall": r,
        "f1": f1,
        "confusion": {f"{g}/{s}": n for (g, s), n in sorted(confusion.items())},
    }


def print_report(engine: str, version: str, results: dict[str, dict]) -> None:
    print(f"NegEx test set: negation decided by {engine} ({version})")
    print(
        f"{'subset':<22}{'rows':>6}{'neg':>6}{'tp':>6}{'fp':>6}{'fn':>6}{'P':>8}{'R':>8}{'F1':>8}"
    )
    for name, v in results.items():
        print(
            f"{name:<22}{v['rows']:>6}{v['negated']:>6}{v['tp']:>6}{v['fp']:>6}{v['fn']:>6}"
            f"{v['precision']:>8.3f}{v['recall']:>8.3f}{v['f1']:>8.3f}"
        )
    g = GENNEGEX
    print(
        f"{'GenNegEx v1.2 (all)':<22}{2376:>6}{491:>6}{471:>6}{23:>6}{20:>6}"
        f"{g['precision']:>8.3f}{g['recall']:>8.3f}{g['f1']:>8.3f}"
        "   (kit output; possible = not negated)"
    )
    print("\nconfusion: gold label x predicted status")
    print(f"{'subset':<22}{'gold':<10}" + "".join(f"{s:>14}" for s in STATUSES))
    for name, v in results.items():
        for gold in ("affirmed", "negated"):
            cells = "".join(f"{v['confusion'].get(f'{gold}/{s}', 0):>14}" for s in STATUSES)
            print(f"{name:<22}{gold:<10}{cells}")


def print_errors(rows: list[Row], statuses: dict[int, str], n: int) -> None:
    wrong = [r for r in rows if r.negated != (statuses[r.id] == "absent")]
    print(f"\n=== {len(wrong)} errors in {len(rows)} rows (first {n}) ===")
    for row in wrong[:n]:
        gold = "negated" if row.negated else "affirmed"
        print(f"- id {row.id} [{row.report_type or '?'}] gold {gold}, got {statuses[row.id]}")
        print(f"  target: {row.target}")
        print(f"  {row.sentence}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="negex_test.tsv")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="casebase")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument(
        "--show-errors",
        choices=["odd", "radiology-odd", "even", "radiology-even", "all"],
        help="list wrong rows (the test half only with --final)",
    )
    parser.add_argument(
        "--final", action="store_true", help="rules are final: allow listing test-half errors"
    )
    parser.add_argument("--n", type=int, default=20, help="errors to list")
    args = parser.parse_args(argv)
    if args.show_errors in ("even", "radiology-even", "all") and not args.final:
        print(
            "error: errors of the even ids (the test half) are listed only with --final, "
            "once the rules are final",
            file=sys.stderr,
        )
        return 2
    if not args.data.is_file():
        print(f"error: no such file: {args.data}", file=sys.stderr)
        return 2
    rows = read_rows(args.data)
    statuses = decide_rows(rows, ENGINES[args.engine]())
    results = {
        name: score([r for r in rows if keep(r)], statuses) for name, keep in SUBSETS.items()
    }
    version = "n/a"
    if args.engine == "casebase":
        from casebase.synthesis import LABELLER_VERSION

        version = LABELLER_VERSION
    if args.json:
        print(json.dumps({"engine": args.engine, "version": version, **results}, indent=2))
    else:
        print_report(args.engine, version, results)
    if args.show_errors:
        keep = {
            "odd": lambda r: r.id % 2 == 1,
            "radiology-odd": lambda r: r.report_type == "RAD" and r.id % 2 == 1,
            "even": lambda r: r.id % 2 == 0,
            "radiology-even": lambda r: r.report_type == "RAD" and r.id % 2 == 0,
            "all": lambda r: True,
        }[args.show_errors]
        print_errors([r for r in rows if keep(r)], statuses, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
