-- Search by study id (revision 0007): the study's query image is casebase.query_image's
-- (the one rule every caller uses), and the filters go to similar_to_vector, whose
-- builder (casebase._filter) checks and applies them. Owned by casebase_owner, pg_temp
-- last in the search path.
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
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    qi record;
BEGIN
    SELECT * INTO qi FROM casebase.query_image(similar_cases.study_id, space);
    RETURN QUERY SELECT * FROM casebase.similar_to_vector(
        q => qi.vec, k => k, modality => coalesce(modality, qi.modality), sex => sex,
        age_min => age_min, age_max => age_max, exclude_flags => exclude_flags,
        exclude_patient => CASE WHEN exclude_same_patient IS NOT FALSE THEN qi.patient_key END,
        space => space, views => views, require_flags => require_flags,
        date_from => date_from, date_to => date_to, batches => batches,
        exclude_study => similar_cases.study_id, attributes => attributes, exact => exact);
END
$fn$;

ALTER FUNCTION casebase.similar_cases(text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean)
    OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.similar_cases(text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_cases(text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean)
    TO casebase_analyst, casebase_ingest;
