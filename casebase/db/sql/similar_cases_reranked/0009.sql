-- Two-stage retrieval by study id (revision 0009): the study's query image
-- (casebase.query_image, the one rule) in `space` finds the candidates and the same
-- rule's image in `rerank_space` re-scores them (casebase.similar_reranked: see its file).
-- The study must have an image in both spaces. Like similar_cases, the study and (unless
-- exclude_same_patient is false) its patient are excluded, and the modality defaults to
-- the study's.
CREATE OR REPLACE FUNCTION casebase.similar_cases_reranked(
    study_id text,
    rerank_space text,
    k integer DEFAULT 20,
    modality text DEFAULT NULL,
    sex text DEFAULT NULL,
    age_min double precision DEFAULT NULL,
    age_max double precision DEFAULT NULL,
    exclude_flags text[] DEFAULT NULL,
    exclude_same_patient boolean DEFAULT true,
    space text DEFAULT NULL,
    views text[] DEFAULT NULL,
    require_flags text[] DEFAULT NULL,
    date_from date DEFAULT NULL,
    date_to date DEFAULT NULL,
    batches text[] DEFAULT NULL,
    attributes jsonb DEFAULT NULL,
    exact boolean DEFAULT false,
    rerank_candidates integer DEFAULT 200
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    first_image record;
    rerank_image record;
BEGIN
    IF rerank_space IS NULL THEN
        RAISE EXCEPTION 'rerank_space is required: the space whose vectors re-score the '
            'candidates' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO first_image FROM casebase.query_image(similar_cases_reranked.study_id, space);
    SELECT * INTO rerank_image
    FROM casebase.query_image(similar_cases_reranked.study_id, rerank_space);
    RETURN QUERY SELECT * FROM casebase.similar_reranked(
        q => first_image.vec, q_rerank => rerank_image.vec, rerank_space => rerank_space,
        k => k, modality => coalesce(modality, first_image.modality), sex => sex,
        age_min => age_min, age_max => age_max, exclude_flags => exclude_flags,
        exclude_patient => CASE WHEN exclude_same_patient IS NOT FALSE
                                THEN first_image.patient_key END,
        space => space, views => views, require_flags => require_flags,
        date_from => date_from, date_to => date_to, batches => batches,
        exclude_study => similar_cases_reranked.study_id, attributes => attributes,
        exact => exact, rerank_candidates => rerank_candidates);
END
$fn$;

ALTER FUNCTION casebase.similar_cases_reranked(text, text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean,
    integer) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.similar_cases_reranked(text, text, integer, text, text,
    double precision, double precision, text[], boolean, text, text[], text[], date, date, text[],
    jsonb, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_cases_reranked(text, text, integer, text, text,
    double precision, double precision, text[], boolean, text, text[], text[], date, date, text[],
    jsonb, boolean, integer) TO casebase_analyst, casebase_ingest;
