-- Two-stage retrieval (revision 0009): candidates from one space, order from another.
-- 1. similar_to_vector(q) in `space` (its routes: HNSW or exact; every filter applied
--    there by casebase._filter) returns rerank_candidates studies;
-- 2. each candidate is re-scored exactly in `rerank_space` by q_rerank: its distance is
--    that of its nearest image there among the images that pass the same filters (the
--    same builder's predicate over the same columns, so the image a hit is shown at
--    always passes them), and the k nearest are returned, ranked anew.
-- A candidate with no passing image in rerank_space (a back-fill in progress) is kept,
-- after every re-scored one, in first-stage order, with its first-stage image and
-- distance: route says first-stage/<route> (re-scored rows: reranked/<route>). So k rows
-- come back whenever the first stage found k, and no row's place is a guess.
-- Guardrails: those of every search, plus rerank_candidates between k and max_k and
-- rerank_space a known space holding the searched modality. rerank_space may equal
-- space: the order is then the first stage's (a check, not a use).
-- The builder's record of rerank_space is parameter $1 of the dynamic statement, q_rerank
-- $2, the candidates $3.
CREATE OR REPLACE FUNCTION casebase.similar_reranked(
    q vector,
    q_rerank vector,
    rerank_space text,
    k integer DEFAULT 20,
    modality text DEFAULT NULL,
    sex text DEFAULT NULL,
    age_min double precision DEFAULT NULL,
    age_max double precision DEFAULT NULL,
    exclude_flags text[] DEFAULT NULL,
    exclude_patient text DEFAULT NULL,
    space text DEFAULT NULL,
    views text[] DEFAULT NULL,
    require_flags text[] DEFAULT NULL,
    date_from date DEFAULT NULL,
    date_to date DEFAULT NULL,
    batches text[] DEFAULT NULL,
    exclude_study text DEFAULT NULL,
    attributes jsonb DEFAULT NULL,
    exact boolean DEFAULT false,
    rerank_candidates integer DEFAULT 200
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    f casebase.search_filter;
    g casebase.search_filter;
    max_k integer;
    cand casebase.similar_case[];
BEGIN
    f := casebase._filter(
        k => k, space => space, modality => modality, sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags, exclude_patient => exclude_patient,
        views => views, require_flags => require_flags, date_from => date_from,
        date_to => date_to, batches => batches, exclude_study => exclude_study,
        attributes => attributes);
    IF rerank_space IS NULL THEN
        RAISE EXCEPTION 'rerank_space is required: the space whose vectors re-score the '
            'candidates' USING ERRCODE = '22023';
    END IF;
    g := casebase._filter(
        k => k, space => rerank_space, modality => f.modality, sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags, exclude_patient => exclude_patient,
        views => views, require_flags => require_flags, date_from => date_from,
        date_to => date_to, batches => batches, exclude_study => exclude_study,
        attributes => attributes);
    SELECT value::integer INTO max_k FROM casebase.setting WHERE key = 'max_k';
    IF rerank_candidates IS NULL OR rerank_candidates < k
        OR rerank_candidates > coalesce(max_k, 1000) THEN
        RAISE EXCEPTION 'rerank_candidates must be between k (%) and %, got %', k,
            coalesce(max_k, 1000), rerank_candidates USING ERRCODE = '22023';
    END IF;
    IF q IS NULL OR q_rerank IS NULL THEN
        RAISE EXCEPTION 'the % vector is NULL', CASE WHEN q IS NULL THEN 'query' ELSE 'rerank' END
            USING ERRCODE = '22023';
    END IF;
    IF vector_dims(q) <> f.dim THEN
        RAISE EXCEPTION 'the query vector has % dimensions; space % has %',
            vector_dims(q), f.space, f.dim USING ERRCODE = '22023';
    END IF;
    IF vector_dims(q_rerank) <> g.dim THEN
        RAISE EXCEPTION 'the rerank vector has % dimensions; space % has %',
            vector_dims(q_rerank), g.space, g.dim USING ERRCODE = '22023';
    END IF;

    cand := ARRAY(SELECT v FROM casebase.similar_to_vector(
        q => q, k => rerank_candidates, modality => f.modality, sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags, exclude_patient => exclude_patient,
        space => f.space, views => views, require_flags => require_flags,
        date_from => date_from, date_to => date_to, batches => batches,
        exclude_study => exclude_study, attributes => attributes, exact => exact) v);

    RETURN QUERY EXECUTE format($q$
        WITH cand AS (
            SELECT c.* FROM unnest($3) c
        ),
        imgs AS MATERIALIZED (
            SELECT i.image_pk
            FROM casebase.study s
            JOIN casebase.image i ON i.study_pk = s.study_pk
            WHERE s.study_id IN (SELECT study_id FROM cand)
        ),
        scored AS (
            SELECT DISTINCT ON (e.study_pk) e.study_id, e.image_pk, e.age, e.sex, e.view,
                   e.flags, e.study_date, (e.vec <=> $2)::double precision AS distance
            FROM %1$s e
            WHERE e.space_id = %3$s AND e.modality = %4$L
              AND e.image_pk = ANY (ARRAY(SELECT image_pk FROM imgs)) AND %2$s
            ORDER BY e.study_pk, e.vec <=> $2, e.image_pk
        ),
        both_stages AS (
            SELECT 0 AS tier, s.distance, s.study_id, s.image_pk, s.age, s.sex, s.view,
                   s.flags, s.study_date, c.impression, 'reranked/' || c.route AS route,
                   c.rank AS first_rank
            FROM scored s JOIN cand c ON c.study_id = s.study_id
            UNION ALL
            SELECT 1, c.distance, c.study_id, c.image_id, c.age, c.sex, c.view, c.flags,
                   c.study_date, c.impression, 'first-stage/' || c.route, c.rank
            FROM cand c
            WHERE NOT EXISTS (SELECT 1 FROM scored s WHERE s.study_id = c.study_id)
        )
        SELECT (row_number() OVER w)::integer, b.study_id, b.distance, 1 - b.distance,
               %4$L::text, b.age, b.sex, b.view, b.flags, b.study_date, b.impression,
               b.image_pk, b.route, ARRAY['image'], 1 - b.distance
        FROM both_stages b
        WINDOW w AS (ORDER BY b.tier, CASE WHEN b.tier = 0 THEN b.distance END,
                     CASE WHEN b.tier = 0 THEN b.study_id END, b.first_rank)
        ORDER BY b.tier, CASE WHEN b.tier = 0 THEN b.distance END,
                 CASE WHEN b.tier = 0 THEN b.study_id END, b.first_rank
        LIMIT %5$s$q$, g.leaf, g.predicate, g.space_id, g.modality, k)
        USING g, q_rerank, cand;
END
$fn$;

ALTER FUNCTION casebase.similar_reranked(vector, vector, text, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean, integer) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.similar_reranked(vector, vector, text, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_reranked(vector, vector, text, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean, integer) TO casebase_analyst, casebase_ingest;
