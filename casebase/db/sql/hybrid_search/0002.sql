-- Hybrid search (RRF, revision 0002): image vectors and report full text searched
-- separately, merged by reciprocal rank fusion so that neither modality drowns the
-- other (seed 003).
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
    candidates integer DEFAULT 100,
    rrf_k integer DEFAULT 60
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public
AS $fn$
DECLARE
    sp casebase.embedding_space;
    m text;
    tsq tsquery;
BEGIN
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'hybrid search needs query text' USING ERRCODE = '22023';
    END IF;
    sp := casebase._space(space);
    m := casebase._leaf(sp, modality);
    tsq := websearch_to_tsquery('english', query);
    RETURN QUERY
    WITH img AS (
        SELECT v.study_id, v.rank AS r, v.distance
        FROM casebase.similar_to_vector(q, greatest(candidates, k), m, sex, age_min, age_max,
                                        exclude_flags, exclude_patient, sp.name) v
        WHERE q IS NOT NULL
    ),
    txt AS (
        SELECT s.study_id, (row_number() OVER (ORDER BY ts_rank_cd(r.tsv, tsq) DESC,
                                                s.study_id))::integer AS r
        FROM casebase.report r
        JOIN casebase.study s USING (study_pk)
        WHERE r.tsv @@ tsq AND s.modality = m
          AND (hybrid_search.sex IS NULL OR s.sex = hybrid_search.sex)
          AND (age_min IS NULL OR s.age >= age_min)
          AND (age_max IS NULL OR s.age <= age_max)
          AND (exclude_flags IS NULL OR NOT (s.flags && exclude_flags))
          AND (exclude_patient IS NULL OR s.patient_key IS DISTINCT FROM exclude_patient)
        ORDER BY ts_rank_cd(r.tsv, tsq) DESC, s.study_id
        LIMIT greatest(candidates, k)
    ),
    fused AS (
        SELECT coalesce(i.study_id, t.study_id) AS study_id,
               coalesce(1.0 / (rrf_k + i.r), 0) + coalesce(1.0 / (rrf_k + t.r), 0) AS score,
               array_remove(ARRAY[CASE WHEN i.r IS NOT NULL THEN 'image' END,
                                  CASE WHEN t.r IS NOT NULL THEN 'text' END], NULL) AS sources,
               i.distance
        FROM img i
        FULL JOIN txt t ON t.study_id = i.study_id
        ORDER BY 2 DESC, 1
        LIMIT k
    )
    SELECT (row_number() OVER (ORDER BY f.score DESC, f.study_id))::integer,
           f.study_id,
           coalesce(f.distance, d.distance),
           1 - coalesce(f.distance, d.distance),
           s.modality, s.age, s.sex, s.view, s.flags, s.study_date, r.impression,
           d.image_pk, 'hybrid'::text, f.sources, f.score::double precision
    FROM fused f
    JOIN casebase.study s ON s.study_id = f.study_id
    LEFT JOIN casebase.report r ON r.study_pk = s.study_pk
    LEFT JOIN LATERAL (
        SELECT e.image_pk, (e.vec <=> q)::double precision AS distance
        FROM casebase.embedding e
        WHERE q IS NOT NULL AND e.space_id = sp.space_id AND e.modality = m
          AND e.study_pk = s.study_pk
        ORDER BY e.vec <=> q
        LIMIT 1
    ) d ON true
    ORDER BY f.score DESC, f.study_id;
END
$fn$;

REVOKE ALL ON FUNCTION casebase.hybrid_search(vector, text, integer, text, text,
    double precision, double precision, text[], text, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.hybrid_search(vector, text, integer, text, text,
    double precision, double precision, text[], text, text, integer, integer)
    TO casebase_analyst, casebase_ingest;
