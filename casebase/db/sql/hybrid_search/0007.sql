-- Hybrid search (RRF, revision 0007): image vectors and report full text searched
-- separately, merged by reciprocal rank fusion so that neither modality drowns the
-- other (seed 003). Revision 0007 gives it the filters of similar_to_vector, same names,
-- same order, same defaults, checked and applied by the same builder (casebase._filter):
-- - the image arm is similar_to_vector itself, with every filter;
-- - the text arm ranks reports, but keeps a study only when one of its embedding rows in
--   the searched leaf passes the builder's predicate: the same predicate over the same
--   columns, so a filter cannot mean one thing per arm (a study's view and flags are its
--   images', on the embedding rows), and every hit has an image in the space;
-- - each hit is shown at its passing image nearest to q (without q: the query-image
--   order, frontal first), and its view and flags are that image's, as in
--   similar_to_vector.
-- Guardrails: k and candidates within max_k, rrf_k 1-1000, the text 1-1000 characters.
-- The builder's record is parameter $1 of the dynamic statement, q $2.
CREATE OR REPLACE FUNCTION casebase.hybrid_search(
    q vector,
    query text,
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
    candidates integer DEFAULT 100,
    rrf_k integer DEFAULT 60
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    f casebase.search_filter;
    max_k integer;
    n integer;
    img casebase.similar_case[];
BEGIN
    f := casebase._filter(
        k => k, space => space, modality => modality, sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags, exclude_patient => exclude_patient,
        views => views, require_flags => require_flags, date_from => date_from,
        date_to => date_to, batches => batches, exclude_study => exclude_study,
        attributes => attributes);
    SELECT value::integer INTO max_k FROM casebase.setting WHERE key = 'max_k';
    IF candidates IS NULL OR candidates < 1 OR candidates > coalesce(max_k, 1000) THEN
        RAISE EXCEPTION 'candidates must be between 1 and %, got %', coalesce(max_k, 1000),
            candidates USING ERRCODE = '22023';
    END IF;
    IF rrf_k IS NULL OR rrf_k < 1 OR rrf_k > 1000 THEN
        RAISE EXCEPTION 'rrf_k must be between 1 and 1000, got %', rrf_k USING ERRCODE = '22023';
    END IF;
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'hybrid search needs query text' USING ERRCODE = '22023';
    END IF;
    IF length(query) > 1000 THEN
        RAISE EXCEPTION 'the query text has % characters; at most 1000', length(query)
            USING ERRCODE = '22023';
    END IF;
    IF q IS NOT NULL AND vector_dims(q) <> f.dim THEN
        RAISE EXCEPTION 'the query vector has % dimensions; space % has %',
            vector_dims(q), f.space, f.dim USING ERRCODE = '22023';
    END IF;
    n := greatest(candidates, k);
    IF q IS NOT NULL THEN
        img := ARRAY(SELECT v FROM casebase.similar_to_vector(
            q => q, k => n, modality => f.modality, sex => sex, age_min => age_min,
            age_max => age_max, exclude_flags => exclude_flags,
            exclude_patient => exclude_patient, space => f.space, views => views,
            require_flags => require_flags, date_from => date_from, date_to => date_to,
            batches => batches, exclude_study => exclude_study, attributes => attributes,
            exact => exact) v);
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH img AS (
            SELECT v.study_id, v.rank AS r FROM unnest($3) v
        ),
        txt AS (
            SELECT s.study_id,
                   (row_number() OVER (ORDER BY ts_rank_cd(r.tsv, $4) DESC, s.study_id))::integer
                       AS r
            FROM casebase.report r
            JOIN casebase.study s ON s.study_pk = r.study_pk
            WHERE r.tsv @@ $4
              AND EXISTS (SELECT 1 FROM %1$s e WHERE e.study_pk = r.study_pk AND %2$s)
            ORDER BY ts_rank_cd(r.tsv, $4) DESC, s.study_id
            LIMIT $5
        ),
        fused AS (
            SELECT coalesce(i.study_id, t.study_id) AS study_id,
                   coalesce(1.0 / ($7 + i.r), 0) + coalesce(1.0 / ($7 + t.r), 0) AS score,
                   array_remove(ARRAY[CASE WHEN i.r IS NOT NULL THEN 'image' END,
                                      CASE WHEN t.r IS NOT NULL THEN 'text' END], NULL)
                       AS sources
            FROM img i
            FULL JOIN txt t ON t.study_id = i.study_id
            ORDER BY 2 DESC, 1
            LIMIT $6
        )
        SELECT (row_number() OVER (ORDER BY fu.score DESC, fu.study_id))::integer,
               fu.study_id, d.distance, 1 - d.distance, %3$L::text, d.age, d.sex, d.view,
               d.flags, d.study_date, r.impression, d.image_pk, 'hybrid'::text, fu.sources,
               fu.score::double precision
        FROM fused fu
        JOIN casebase.study s ON s.study_id = fu.study_id
        CROSS JOIN LATERAL (
            SELECT e.image_pk, e.age, e.sex, e.view, e.flags, e.study_date,
                   (e.vec <=> $2)::double precision AS distance
            FROM %1$s e
            WHERE e.study_pk = s.study_pk AND %2$s
            ORDER BY e.vec <=> $2, (e.view IN ('PA', 'AP', 'AP_SUPINE')) IS TRUE DESC,
                     e.image_pk
            LIMIT 1
        ) d
        LEFT JOIN casebase.report r ON r.study_pk = s.study_pk
        ORDER BY fu.score DESC, fu.study_id$q$, f.leaf, f.predicate, f.modality)
        USING f, q, img, websearch_to_tsquery('english', query), n, k, rrf_k;
END
$fn$;

ALTER FUNCTION casebase.hybrid_search(vector, text, integer, text, text, double precision,
    double precision, text[], text, text, text[], text[], date, date, text[], text, jsonb,
    boolean, integer, integer) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.hybrid_search(vector, text, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.hybrid_search(vector, text, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean, integer, integer) TO casebase_analyst, casebase_ingest;
