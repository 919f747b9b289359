"""The Python client: ``casebase.connect()`` → ``Client``.

Thin on purpose: it opens one connection, validates arguments, and calls the
same SQL functions analysts call (``casebase.similar_to_vector`` and friends).
torch is imported only when a query needs the encoder (an image or a text).

Reads and writes: with a ``read_url`` (``CASEBASE_READ_URL``: a hot standby, or a libpq
multi-host URL), the methods marked ``@_read`` (search, briefs' lookups, eval) run there
and everything else on the primary (``url``). A read server that cannot be reached sends
reads to the primary with one warning (``casebase.db.routing``). After a write, reads
see it once :meth:`Client.wait_for_replica` returns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from casebase.config import Settings, load_settings
from casebase.errors import InputError, QueryError
from casebase.retrieval.filters import Filters
from casebase.retrieval.hits import Hit

if TYPE_CHECKING:
    from psycopg import Connection

    from casebase.db.replication import Replay
    from casebase.synthesis.brief import Brief
    from casebase.synthesis.llm import LLMBackend

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def connect(
    url: str | None = None, *, read_url: str | None = None, settings: Settings | None = None
) -> Client:
    """Connect to ``url``, ``DATABASE_URL``, or the embedded server (started if needed);
    reads go to ``read_url`` (default ``CASEBASE_READ_URL``) when one is given."""
    return Client(url, read_url=read_url, settings=settings)


def _read(method: F) -> F:
    """A method that only reads: it uses ``self.read_conn``, and if the read server's
    connection breaks under it, it runs once more, on the primary."""

    @functools.wraps(method)
    def run(self: Client, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._route.pinned():
                return method(self, *args, **kwargs)
        except Exception as exc:
            if not self._route.failed_over(exc):
                raise
            return method(self, *args, **kwargs)

    return cast(F, run)


class Client:
    def __init__(
        self,
        url: str | None = None,
        *,
        read_url: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        from casebase.db import migrate
        from casebase.db.connection import checked_url, connect
        from casebase.db.routing import ReadRoute

        self.settings = settings or load_settings()
        self.url = url or checked_url(self.settings)
        self.conn = connect(self.url)
        migrate.ensure_current(self.conn)
        self.conn.commit()
        self._route = ReadRoute(self.conn, read_url or self.settings.read_url)

    @property
    def read_conn(self) -> Connection:
        """The connection reads use now: the read server's, or the primary's."""
        return self._route.conn

    def wait_for_replica(self, *, min_lsn: str | None = None, timeout: float = 30.0) -> Replay:
        """Block until reads see every write committed on the primary up to ``min_lsn``
        (default: everything committed before this call, e.g. the ingest just finished).

        Returns at once when reads go to the primary. A read server that has not
        replayed that far in ``timeout`` seconds is a ``ReplicaLagError`` naming the lag.
        """
        return self._route.wait_for(min_lsn, timeout=timeout)

    def write_lsn(self) -> str:
        """The primary's WAL position now: give it to another process's
        ``wait_for_replica(min_lsn=...)`` so that it reads what this one wrote."""
        from casebase.db.replication import current_lsn

        lsn = current_lsn(self.conn)
        self.conn.commit()
        return lsn

    def _writes(self, what: str) -> None:
        """Refuse at once, in one line, to write through a standby."""
        from casebase.db.replication import require_primary

        require_primary(self.conn, what)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self._route.close()
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ spaces
    @_read
    def space(self, name: str | None = None):
        from casebase.db.spaces import get_space

        space = get_space(self.read_conn, name)
        self.read_conn.commit()
        return space

    @_read
    def spaces(self):
        """Every space, in creation order."""
        from casebase.db.spaces import list_spaces

        spaces = list_spaces(self.read_conn)
        self.read_conn.commit()
        return spaces

    @_read
    def space_rows(self):
        """Every space with its vector count per modality (``casebase spaces list``)."""
        from casebase.train.spaces import space_rows

        return space_rows(self.read_conn)

    def add_space(self, checkpoint: str | Path, *, name: str | None = None):
        """Register a ``casebase train`` checkpoint as a new, empty space; idempotent."""
        from casebase.train.spaces import add_checkpoint_space

        self._writes("spaces add")
        return add_checkpoint_space(self.conn, checkpoint, name=name)

    def set_default_space(self, name: str):
        """Make searches (and ``space=None``) use space ``name``."""
        from casebase.db.spaces import set_default

        self._writes("spaces default")
        space = set_default(self.conn, name)
        self.conn.commit()
        return space

    def drop_space(self, name: str) -> int:
        """Delete a non-default space and its vectors; return how many vectors went."""
        from casebase.train.spaces import drop_space

        self._writes("spaces drop")
        return drop_space(self.conn, name)

    # ------------------------------------------------------------------ search
    @_read
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
        modify: str | None = None,
        modify_weight: float = 1.0,
        rerank_space: str | None = None,
        rerank_candidates: int = 200,
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

        ``modify="left pleural effusion"`` composes an image, study or vector query with
        text: "cases like this, but with ..." (``modify_weight`` 0-10; the rule is in
        ``casebase.retrieval.compose``). ``rerank_space="B"`` takes ``rerank_candidates``
        studies from ``space`` and orders them by space B's vectors (an image or study
        query; ``casebase.similar_reranked``).
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
        if modify is not None or rerank_space is not None:
            hits = self._search_two_step(
                space_obj,
                image=image,
                study_id=study_id,
                vector=vector,
                text=text,
                k=k,
                fetch_k=fetch_k,
                filters=filters,
                exact=exact,
                modify=modify,
                modify_weight=modify_weight,
                rerank_space=rerank_space,
                rerank_candidates=rerank_candidates,
            )
        elif study_id is not None and not text:
            hits = s.search_study(
                self.read_conn,
                study_id,
                k=fetch_k,
                filters=filters,
                space=space_obj.name,
                exact=exact,
                timeout_ms=timeout,
            )
        elif study_id is not None and text:
            qvec, filters, exclude_patient = self._study_query(study_id, space_obj.name, filters)
            hits = s.search_hybrid(
                self.read_conn,
                qvec,
                text,
                k=fetch_k,
                filters=filters,
                space=space_obj.name,
                exact=exact,
                exclude_patient=exclude_patient,
                exclude_study=study_id,
                timeout_ms=timeout,
            )
        else:
            qvec = self._query_vector(space_obj, image=image, vector=vector, text=text)
            use_hybrid = bool(text) if hybrid is None else hybrid
            if use_hybrid and text:
                hits = s.search_hybrid(
                    self.read_conn,
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
                    self.read_conn,
                    qvec,
                    k=fetch_k,
                    filters=filters,
                    space=space_obj.name,
                    exact=exact,
                    timeout_ms=timeout,
                )
        if diverse:
            vectors = s.study_vectors(self.read_conn, [h.image_id for h in hits if h.image_id])
            patients = self._patient_keys([h.study_id for h in hits])
            hits = s.diversify(hits, vectors, k=k, min_distance=diverse, patient_keys=patients)
        self.read_conn.commit()
        return hits[:k]

    def _search_two_step(
        self,
        space,
        *,
        image,
        study_id: str | None,
        vector,
        text: str | None,
        k: int,
        fetch_k: int,
        filters: Filters,
        exact: bool,
        modify: str | None,
        modify_weight: float,
        rerank_space: str | None,
        rerank_candidates: int,
    ) -> list[Hit]:
        """A composed (``modify``) or re-ranked (``rerank_space``) search: each input is
        checked before any model loads, in the words of the SQL functions."""
        from casebase.retrieval import compose
        from casebase.retrieval import search as s

        what = "modify" if modify is not None else "rerank_space"
        if modify is not None and rerank_space is not None:
            raise QueryError("give modify or rerank_space, not both")
        if text:
            raise QueryError(f"{what} works with an image, study_id or vector query, not text")
        if study_id is None and image is None and vector is None:
            raise QueryError(f"{what} needs an image, study_id or vector query")
        timeout = self.settings.statement_timeout_ms
        exclude_patient = None
        if modify is not None:
            compose.check_prompt(modify)
            compose.check_weight(modify_weight)
            if study_id is not None:
                qvec, filters, exclude_patient = self._study_query(study_id, space.name, filters)
            else:
                qvec = self._query_vector(space, image=image, vector=vector, text=None)
            step = compose.modify_vectors(space, modify, modify_weight, self.settings.device)
            return s.search_composed(
                self.read_conn,
                qvec,
                step.modify,
                step.neutral,
                step.weight,
                k=fetch_k,
                filters=filters,
                space=space.name,
                exact=exact,
                exclude_patient=exclude_patient,
                exclude_study=study_id,
                timeout_ms=timeout,
            )
        s.check_rerank_candidates(rerank_candidates, k, self.settings.max_k)
        second = self.space(rerank_space)
        if vector is not None:
            raise QueryError(
                "a vector query cannot be re-ranked: it is in one space only (SQL: "
                "casebase.similar_reranked takes a vector of each space)"
            )
        common = {
            "rerank_space": second.name,
            "rerank_candidates": rerank_candidates,
            "k": min(fetch_k, rerank_candidates),
            "filters": filters,
            "space": space.name,
            "exact": exact,
            "timeout_ms": timeout,
        }
        if study_id is not None:
            return s.search_study_reranked(self.read_conn, study_id, **common)
        from casebase.retrieval import encode

        first = encode.image_vector(space, image, self.settings.device)
        rerank = encode.image_vector(second, image, self.settings.device)
        return s.search_reranked(self.read_conn, first, rerank, **common)

    def _study_query(self, study_id: str, space_name: str, filters: Filters):
        """A study as a vector query, by the rule ``casebase.similar_cases`` uses: its
        query image's vector (``casebase.query_image``), its modality when the filters name
        none, and its patient to exclude unless ``filters.exclude_same_patient`` is False.
        Returns ``(vector, filters, exclude_patient)``."""
        from casebase.retrieval.lookup import query_image

        query = query_image(self.read_conn, study_id, space_name)
        if filters.modality is None:
            filters = dataclasses.replace(filters, modality=query.modality)
        exclude_patient = query.patient_key if filters.exclude_same_patient else None
        return query.vector, filters, exclude_patient

    @_read
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

    @_read
    def _patient_keys(self, study_ids: Sequence[str]) -> dict[str, str | None]:
        rows = self.read_conn.execute(
            "SELECT study_id, patient_key FROM casebase.studies WHERE study_id = ANY(%s)",
            (list(study_ids),),
        ).fetchall()
        return dict(rows)

    # ------------------------------------------------------------------ prompts
    def embed_prompts(self, prompts: Sequence[str], *, space: str | None = None):
        """Embed ``prompts`` (and the neutral prompt) with the space's text tower and
        store them, so that ``casebase.similar_cases_modified`` can use them in SQL."""
        from casebase.retrieval.compose import store_prompts

        stored = store_prompts(self.conn, self.space(space), prompts, self.settings.device)
        self.conn.commit()
        return stored

    @_read
    def prompts(self, *, space: str | None = None):
        """The stored prompts, of one space or of all (``casebase.prompts``)."""
        from casebase.retrieval.compose import list_prompts

        found = list_prompts(self.read_conn, self.space(space).name if space else None)
        self.read_conn.commit()
        return found

    # ------------------------------------------------------------------ studies & images
    @_read
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
            self.read_conn,
            batch=batch,
            modality=modality,
            exclude_flags=exclude_flags,
            attribute_contains=attribute_contains,
            limit=limit,
        )
        self.read_conn.commit()
        return ids

    @_read
    def image_uris(self, hits: Sequence[Hit]) -> dict[int, str]:
        """image_id → file the image was loaded from, for the hits' images."""
        from casebase.retrieval.lookup import image_uris

        uris = image_uris(self.read_conn, [h.image_id for h in hits if h.image_id is not None])
        self.read_conn.commit()
        return uris

    @_read
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
            uri = query_image_uri(self.read_conn, study_id, self.space(space).name)
            query_image, label = _open(uri), study_id
        else:
            query_image, label = None, repr(text)
        paths = self.image_uris(hits)
        return contact_sheet(
            path, query_image=query_image, query_label=label, hits=hits, image_paths=paths
        )

    @_read
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
            uri = (
                query_image_uri(self.read_conn, study_id, self.space(space).name)
                if study_id
                else None
            )
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
    @_read
    def findings(self, study_ids: Sequence[str], *, backend: str = "rules"):
        """study_id → {finding: status} for the given studies (one backend)."""
        rows = self.read_conn.execute(
            "SELECT study_id, finding, status FROM casebase.findings "
            "WHERE study_id = ANY(%s) AND backend = %s",
            (list(study_ids), backend),
        ).fetchall()
        self.read_conn.commit()
        out: dict[str, dict[str, str]] = {}
        for study_id, finding, status in rows:
            out.setdefault(study_id, {})[finding] = status
        return out

    @_read
    def studies_with_report(self, study_ids: Sequence[str]) -> set[str]:
        rows = self.read_conn.execute(
            "SELECT study_id FROM casebase.studies WHERE study_id = ANY(%s) "
            "AND (findings IS NOT NULL OR impression IS NOT NULL)",
            (list(study_ids),),
        ).fetchall()
        self.read_conn.commit()
        return {r[0] for r in rows}

    @_read
    def report_texts(self, study_ids: Sequence[str]) -> dict[str, str]:
        """study_id → sanitised findings and impression (the ``casebase.studies`` view,
        never the raw report), for the studies that have a report."""
        from casebase.synthesis.second_opinion import report_text

        rows = self.read_conn.execute(
            "SELECT study_id, findings, impression FROM casebase.studies "
            "WHERE study_id = ANY(%s) AND (findings IS NOT NULL OR impression IS NOT NULL)",
            (list(study_ids),),
        ).fetchall()
        self.read_conn.commit()
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

    @_read
    def evaluate(self, **options):
        """Retrieval quality (see ``casebase.retrieval.evaluate.evaluate`` for options)."""
        from casebase.retrieval.evaluate import evaluate

        if options.get("queries", 1) < 1:
            raise QueryError("--queries must be at least 1")
        return evaluate(self.read_conn, **options)

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

    def relabel(
        self, *, batch: str | None = None, convention: str | None = None
    ) -> tuple[int, int]:
        """Re-extract the findings of every report (or one batch's) after a lexicon
        change, or under another coding convention (``conventions.yaml``; stored, so new
        batches follow it); return (reports, findings)."""
        from casebase.synthesis.store import relabel

        self._writes("relabel")
        return relabel(self.conn, batch=batch, convention=convention)

    def labeller_version(self) -> str:
        """What the installation's rule findings record: the labeller's version and its
        coding convention when not strict (e.g. ``rules-2.2+iu-coders``)."""
        from casebase.synthesis import labeller_version
        from casebase.synthesis.store import stored_convention

        return labeller_version(stored_convention(self.conn))

    # ------------------------------------------------------------------ train, reembed
    def train(self, **options):
        """Fine-tune a space's model (see ``casebase.train.loop.train`` for options)."""
        from casebase.train.loop import train

        return train(self.conn, **options)

    def reembed(self, *, source: str, target: str, **options):
        """Back-fill space ``target`` with the images of ``source`` (resumable; see
        ``casebase.train.reembed.reembed`` for options)."""
        from casebase.train.reembed import reembed

        self._writes("reembed")
        return reembed(self.conn, source=source, target=target, **options)
