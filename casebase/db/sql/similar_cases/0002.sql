-- Search by study id: the study's frontal image is the query (revision 0002).
CREATE OR REPLACE FUNCTION casebase.similar_cases(
    study_id text,
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
    exact boolean DEFAULT false
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public
AS $fn$
DECLARE
    st casebase.study;
    sp casebase.embedding_space;
    q vector;
BEGIN
    SELECT * INTO st FROM casebase.study s WHERE s.study_id = similar_cases.study_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown study id %', quote_literal(similar_cases.study_id)
            USING ERRCODE = '22023';
    END IF;
    sp := casebase._space(space);
    -- The query image: a frontal view when the study has one, else its first image.
    SELECT e.vec INTO q
    FROM casebase.embedding e
    WHERE e.space_id = sp.space_id AND e.modality = st.modality AND e.study_pk = st.study_pk
    ORDER BY (e.view IN ('PA', 'AP', 'AP_SUPINE')) IS TRUE DESC, e.image_pk
    LIMIT 1;
    IF q IS NULL THEN
        RAISE EXCEPTION 'study % has no image in space %', quote_literal(st.study_id), sp.name
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT * FROM casebase.similar_to_vector(
        q, k, coalesce(modality, st.modality), sex, age_min, age_max, exclude_flags,
        CASE WHEN exclude_same_patient THEN st.patient_key END, sp.name, views, require_flags,
        date_from, date_to, batches, st.study_id, attributes, exact);
END
$fn$;

REVOKE ALL ON FUNCTION casebase.similar_cases(text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_cases(text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean)
    TO casebase_analyst, casebase_ingest;
