"""The Python client: ``casebase.connect()`` → ``Client``.

Thin on purpose: it opens one connection, validates arguments, and calls the
same SQL functions analysts call (``casebase.similar_to_vector`` and friends).
torch is imported only when a query needs the encoder (an image or a text).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from casebase.config import Settings, load_settings
from casebase.errors import InputError, QueryError
from casebase.retrieval.filters import Filters
from casebase.retrieval.hits import Hit

if TYPE_CHECKING:
    from casebase.synthesis.brief import Brief
    from casebase.synthesis.llm import LLMBackend

log = logging.getLogger(__name__)


def connect(url: str | None = None, *, settings: Settings | None = None) -> Client:
    """Connect to ``url``, ``DATABASE_URL``, or the embedded server (started if needed)."""
    return Client(url, settings=settings)


class Client:
    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        from casebase.db import migrate
        from casebase.db.connection import checked_url, connect

        self.settings = settings or load_settings()
        self.url = url or checked_url(self.settings)
        self.conn = connect(self.url)
        migrate.ensure_current(self.conn)
        self.conn.commit()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ spaces
    def space(self, name: str | None = None):
        from casebase.db.spaces import get_space

        space = get_space(self.conn, name)
        self.conn.commit()
        return space

    def spaces(self):
        """Every space, in creation order."""
        from casebase.db.spaces import list_spaces

        spaces = list_spaces(self.conn)
        self.conn.commit()
        return spaces

    def space_rows(self):
        """Every space with its vector count per modality (``casebase spaces list``)."""
        from casebase.train.spaces import space_rows

        return space_rows(self.conn)

    def add_space(self, checkpoint: str | Path, *, name: str | None = None):
        """Register a ``casebase train`` checkpoint as a new, empty space; idempotent."""
        from casebase.train.spaces import add_checkpoint_space

        return add_checkpoint_space(self.conn, checkpoint, name=name)

    def set_default_space(self, name: str):
        """Make searches (and ``space=None``) use space ``name``."""
        from casebase.db.spaces import set_default

        space = set_default(self.conn, name)
        self.conn.commit()
        return space

    def drop_space(self, name: str) -> int:
        """Delete a non-default space and its vectors; return how many vectors went."""
        from casebase.train.spaces import drop_space

        return drop_space(self.conn, name)

    # ------------------------------------------------------------------ search
    def search(
        self,
        *,
        image=None,
        text: str | None = None,
        study_id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 20,
        modality: str | None = None,
        sex: str | None = None,
        age: tuple[float | None, float | None] | None = None,
        view: str | Sequence[str] | None = None,
        exclude_flags: Sequence[str] = (),
        require_flags: Sequence[str] = (),
        date_from: dt.date | None = None,
        date_to: dt.date | None = None,
        batches: Sequence[str] | None = None,
        attributes: dict[str, str] | None = None,
        exclude_same_patient: bool = True,
        exact: bool = False,
        space: str | None = None,
        hybrid: bool | None = None,
        diverse: float | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        """The k most similar studies (not images) to one query, filtered in the same SQL.

        Exactly one of ``image`` / ``study_id`` / ``vector`` may be given, with or
        without ``text``; ``text`` alone searches image vectors through the text tower
        *and* report full text, merged by reciprocal rank fusion (``hybrid``); with a
        query it adds report full text to that query's image list. The filters are the
        keyword arguments or one ``filters=Filters(...)`` (not both), and every kind of
        query applies all of them in SQL (``casebase._filter``). A study query (with or
        without text) excludes the study and, unless ``exclude_same_patient=False``, its
        patient; its modality is the default one. ``diverse=0.02`` drops hits of a
        patient already shown, or within that cosine distance of a hit already kept.
        """
        from casebase.retrieval import search as s

        s.check_k(k, self.settings.max_k)
        given = [
            n
            for n, v in (("image", image), ("study_id", study_id), ("vector", vector))
            if v is not None
        ]
        if len(given) > 1:
            raise QueryError(f"give one query, not {' and '.join(given)}")
        if not given and not text:
            raise QueryError("nothing to search for: give an image, text, study_id or vector")
        if given and text and hybrid is False:
            raise QueryError(
                f"hybrid=False would ignore the text of a {given[0]} + text query: drop one"
            )
        views = (view,) if isinstance(view, str) else (tuple(view) if view else None)
        loose = Filters(
            modality=modality,
            sex=sex,
            age=age,
            views=views,
            exclude_flags=tuple(exclude_flags),
            require_flags=tuple(require_flags),
            date_from=date_from,
            date_to=date_to,
            batches=tuple(batches) if batches else None,
            attributes=attributes,
            exclude_same_patient=exclude_same_patient,
        )
        if filters is None:
            filters = loose
        elif loose != Filters():
            raise QueryError(
                "give the filters as filters=Filters(...) or as keyword arguments, not both"
            )
        fetch_k = min(self.settings.max_k, k * 3) if diverse else k
        timeout = self.settings.statement_timeout_ms
        space_obj = self.space(space)
        if study_id is not None and not text:
            hits = s.search_study(
                self.conn,
                study_id,
                k=fetch_k,
                filters=filters,
                space=space_obj.name,
                exact=exact,
                timeout_ms=timeout,
            )
        elif study_id is not None and text:
            # The study's query image, modality and patient, by the rule similar_cases uses.
            from casebase.retrieval.lookup import query_image

            query = query_image(self.conn, study_id, space_obj.name)
            if filters.modality is None:
                filters = dataclasses.replace(filters, modality=query.modality)
            hits = s.search_hybrid(
                self.conn,
                query.vector,
                text,
                k=fetch_k,
                filters=filters,
                space=space_obj.name,
                exact=exact,
                exclude_patient=query.patient_key if filters.exclude_same_patient else None,
                exclude_study=study_id,
                timeout_ms=timeout,
            )
        else:
            qvec = self._query_vector(space_obj, image=image, vector=vector, text=text)
            use_hybrid = bool(text) if hybrid is None else hybrid
            if use_hybrid and text:
                hits = s.search_hybrid(
                    self.conn,
                    qvec,
                    text,
                    k=fetch_k,
                    filters=filters,
                    space=space_obj.name,
                    exact=exact,
                    timeout_ms=timeout,
                )
            else:
                hits = s.search_vector(
                    self.conn,
                    qvec,
                    k=fetch_k,
                    filters=filters,
                    space=space_obj.name,
                    exact=exact,
                    timeout_ms=timeout,
                )
        if diverse:
            vectors = s.study_vectors(self.conn, [h.image_id for h in hits if h.image_id])
            patients = self._patient_keys([h.study_id for h in hits])
            hits = s.diversify(hits, vectors, k=k, min_distance=diverse, patient_keys=patients)
        self.conn.commit()
        return hits[:k]

    def _query_vector(self, space, *, image, vector, text):
        """The vector of an image, vector or text query (a study's comes from SQL:
        ``casebase.query_image``)."""
        from casebase.retrieval import encode
        from casebase.retrieval.search import as_array

        if vector is not None:
            vec = as_array(vector)
            if vec.size != space.dim:
                raise QueryError(
                    f"the query vector has {vec.size} dimensions; space {space.name} has "
                    f"{space.dim}"
                )
            return vec
        if image is not None:
            return encode.image_vector(space, image, self.settings.device)
        return encode.text_vector(space, text, self.settings.device)

    def _patient_keys(self, study_ids: Sequence[str]) -> dict[str, str | None]:
        rows = self.conn.execute(
            "SELECT study_id, patient_key FROM casebase.studies WHERE study_id = ANY(%s)",
            (list(study_ids),),
        ).fetchall()
        return dict(rows)

    # ------------------------------------------------------------------ studies & images
    def study_ids(
        self,
        *,
        batch: str | None = None,
        modality: str | None = None,
        exclude_flags: Sequence[str] = (),
        attribute_contains: dict[str, str] | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Study ids in id order, picked by metadata (see ``retrieval.lookup.study_ids``)."""
        from casebase.retrieval.lookup import study_ids

        ids = study_ids(
            self.conn,
            batch=batch,
            modality=modality,
            exclude_flags=exclude_flags,
            attribute_contains=attribute_contains,
            limit=limit,
        )
        self.conn.commit()
        return ids

    def image_uris(self, hits: Sequence[Hit]) -> dict[int, str]:
        """image_id → file the image was loaded from, for the hits' images."""
        from casebase.retrieval.lookup import image_uris

        uris = image_uris(self.conn, [h.image_id for h in hits if h.image_id is not None])
        self.conn.commit()
        return uris

    def contact_sheet(
        self,
        path: str | Path,
        hits: Sequence[Hit],
        *,
        image=None,
        study_id: str | None = None,
        text: str | None = None,
        space: str | None = None,
    ) -> Path:
        """Write a PNG grid of the query and its hits (``casebase search --grid``). The
        query tile shows ``image``, else the query image of ``study_id`` in ``space`` (the
        one the search used: ``casebase.query_image``), else none (the ``text`` as its
        label); a hit whose file cannot be read shows as unavailable."""
        from casebase.retrieval.grid import _open, contact_sheet
        from casebase.retrieval.lookup import query_image_uri

        if image is not None:
            from casebase.retrieval.encode import load_query_image

            query_image = load_query_image(image)
            label = str(image) if isinstance(image, str | Path) else "image"
        elif study_id is not None:
            uri = query_image_uri(self.conn, study_id, self.space(space).name)
            query_image, label = _open(uri), study_id
        else:
            query_image, label = None, repr(text)
        paths = self.image_uris(hits)
        return contact_sheet(
            path, query_image=query_image, query_label=label, hits=hits, image_paths=paths
        )

    def brief_html(
        self,
        brief: Brief,
        hits: Sequence[Hit],
        *,
        image=None,
        study_id: str | None = None,
        space: str | None = None,
        path: str | Path | None = None,
    ) -> str:
        """``brief`` as one self-contained HTML page (``Brief.render_html``) with the
        hits' films and the query's inlined as thumbnails; written to ``path`` if given.

        The query film is ``image``, else the query image of ``study_id`` in ``space``
        (``casebase.query_image``, the one the search used). A file that
        cannot be read shows as "image unavailable": a moved archive never stops a brief.
        """
        from casebase.retrieval.grid import _open
        from casebase.retrieval.lookup import query_image_uri
        from casebase.synthesis.brief_html import encode_thumbnail, output_path

        out = output_path(path) if path is not None else None
        if image is not None:
            from casebase.retrieval.encode import load_query_image

            query = load_query_image(image)
        else:
            uri = query_image_uri(self.conn, study_id, self.space(space).name) if study_id else None
            query = _open(uri)
        uris = self.image_uris(hits)
        thumbnails = {}
        for hit in hits:
            film = _open(uris.get(hit.image_id)) if hit.image_id is not None else None
            if film is not None:
                thumbnails[hit.study_id] = encode_thumbnail(film)
        page = brief.render_html(
            hits,
            thumbnails=thumbnails,
            query_thumbnail=encode_thumbnail(query) if query is not None else None,
        )
        if out is not None:
            out.write_text(page, encoding="utf-8")
        return page

    # ------------------------------------------------------------------ findings & briefs
    def findings(self, study_ids: Sequence[str], *, backend: str = "rules"):
        """study_id → {finding: status} for the given studies (one backend)."""
        rows = self.conn.execute(
            "SELECT study_id, finding, status FROM casebase.findings "
            "WHERE study_id = ANY(%s) AND backend = %s",
            (list(study_ids), backend),
        ).fetchall()
        self.conn.commit()
        out: dict[str, dict[str, str]] = {}
        for study_id, finding, status in rows:
            out.setdefault(study_id, {})[finding] = status
        return out

    def studies_with_report(self, study_ids: Sequence[str]) -> set[str]:
        rows = self.conn.execute(
            "SELECT study_id FROM casebase.studies WHERE study_id = ANY(%s) "
            "AND (findings IS NOT NULL OR impression IS NOT NULL)",
            (list(study_ids),),
        ).fetchall()
        self.conn.commit()
        return {r[0] for r in rows}

    def report_texts(self, study_ids: Sequence[str]) -> dict[str, str]:
        """study_id → sanitised findings and impression (the ``casebase.studies`` view,
        never the raw report), for the studies that have a report."""
        from casebase.synthesis.second_opinion import report_text

        rows = self.conn.execute(
            "SELECT study_id, findings, impression FROM casebase.studies "
            "WHERE study_id = ANY(%s) AND (findings IS NOT NULL OR impression IS NOT NULL)",
            (list(study_ids),),
        ).fetchall()
        self.conn.commit()
        return {sid: report_text(findings, impression) for sid, findings, impression in rows}

    def brief(
        self,
        hits: Sequence[Hit],
        *,
        query: str = "",
        filters: Filters | dict | None = None,
        exclude_flags: Sequence[str] = (),
        space: str | None = None,
        narrative: str | None = None,
        llm: str | LLMBackend | None = None,
        narrate: bool = False,
    ):
        """Sum up the findings of the hits' reports; every number keeps its study ids.

        ``llm`` (a litellm model string, "" for ``CASEBASE_LLM_MODEL``, or an
        ``LLMBackend``) adds an LLM second opinion (``brief.llm``): the same reports
        labelled by the model, counted apart from the rule counts, which stay the
        brief's numbers; ``narrate=True`` adds its checked narrative of the rule counts.
        """
        import dataclasses

        from casebase.synthesis.aggregate import aggregate
        from casebase.synthesis.brief import Brief

        backend = None
        if llm is not None:  # before any query: a missing model or extra fails at once
            from casebase.synthesis.second_opinion import make_backend

            backend = make_backend(llm, self.settings)
        elif narrate:
            raise InputError("narrate=True needs an LLM: pass llm='provider/model'")
        ids = [h.study_id for h in hits]
        found = self.findings(ids)
        with_report = self.studies_with_report(ids)
        table = {sid: found.get(sid, {}) for sid in with_report}
        agg = aggregate(hits, table, exclude_flags=tuple(exclude_flags))
        sp = self.space(space)
        described = filters.describe() if isinstance(filters, Filters) else dict(filters or {})
        if exclude_flags:
            described["exclude_flags"] = list(exclude_flags)
        model = sp.model_name + (f" ({sp.pretrained})" if sp.pretrained else "")
        result = Brief.create(
            agg,
            k=len(hits),
            query=query,
            filters=described,
            space=sp.name,
            model=model,
            narrative=narrative,
        )
        if backend is None:
            return result
        from casebase.synthesis.second_opinion import second_opinion

        texts = self.report_texts([sid for sid in agg.study_ids if sid in with_report])
        section = second_opinion(backend, result, texts, narrate=narrate)
        return dataclasses.replace(result, llm=section)

    def evaluate(self, **options):
        """Retrieval quality (see ``casebase.retrieval.evaluate.evaluate`` for options)."""
        from casebase.retrieval.evaluate import evaluate

        if options.get("queries", 1) < 1:
            raise QueryError("--queries must be at least 1")
        return evaluate(self.conn, **options)

    def tune(self, **options):
        """Calibrate each leaf's search from its own vectors and store it (see
        ``casebase.retrieval.tune.tune`` for options); returns what was measured."""
        from casebase.retrieval.tune import tune

        report = tune(self.conn, **options)
        self.conn.commit()
        return report

    def tuning(self) -> dict[str, dict]:
        """The stored calibrations, by leaf."""
        from casebase.retrieval.tune import tuned

        stored = tuned(self.conn)
        self.conn.commit()
        return stored

    def reset_tuning(self) -> int:
        """Forget every calibration; returns how many there were."""
        from casebase.retrieval.tune import reset

        count = reset(self.conn)
        self.conn.commit()
        return count

    # ------------------------------------------------------------------ ingest, relabel
    def ingest(self, source: str | Path, *, batch: str, **options):
        """Load a batch (see ``casebase.ingest.pipeline.IngestOptions`` for options)."""
        from casebase.ingest.pipeline import IngestOptions, ingest

        return ingest(source, IngestOptions(batch=batch, **options), url=self.url)

    def relabel(self, *, batch: str | None = None) -> tuple[int, int]:
        """Re-extract the findings of every report (or one batch's) after a lexicon
        change; return (reports, findings)."""
        from casebase.synthesis.store import relabel

        return relabel(self.conn, batch=batch)

    # ------------------------------------------------------------------ train, reembed
    def train(self, **options):
        """Fine-tune a space's model (see ``casebase.train.loop.train`` for options)."""
        from casebase.train.loop import train

        return train(self.conn, **options)

    def reembed(self, *, source: str, target: str, **options):
        """Back-fill space ``target`` with the images of ``source`` (resumable; see
        ``casebase.train.reembed.reembed`` for options)."""
        from casebase.train.reembed import reembed

        return reembed(self.conn, source=source, target=target, **options)
