-- The query image of a study (revision 0007): the one rule every caller uses (the
-- search functions, the Python client, the contact sheet, the demo). A frontal view
-- first (PA, AP, AP_SUPINE alike), then the lowest image id, among the study's images
-- in the space's leaf of the study's own modality. With it come what a search by this
-- study needs: the study's modality (the default leaf) and patient key (excluded).
CREATE OR REPLACE FUNCTION casebase.query_image(study_id text, space text DEFAULT NULL)
RETURNS TABLE (image_id bigint, vec vector, modality text, patient_key text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    st casebase.study;
    sp casebase.embedding_space;
BEGIN
    SELECT s.* INTO st FROM casebase.study s WHERE s.study_id = query_image.study_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown study id %', quote_literal(query_image.study_id)
            USING ERRCODE = '22023';
    END IF;
    sp := casebase._space(space);
    RETURN QUERY
    SELECT e.image_pk, e.vec, st.modality, st.patient_key
    FROM casebase.embedding e
    WHERE e.space_id = sp.space_id AND e.modality = st.modality AND e.study_pk = st.study_pk
    ORDER BY (e.view IN ('PA', 'AP', 'AP_SUPINE')) IS TRUE DESC, e.image_pk
    LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'study % has no image in space %', quote_literal(st.study_id), sp.name
            USING ERRCODE = '22023';
    END IF;
END
$fn$;

ALTER FUNCTION casebase.query_image(text, text) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.query_image(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.query_image(text, text) TO casebase_analyst, casebase_ingest;
