-- Composed query by study id (revision 0009): the study's query image
-- (casebase.query_image, the one rule), moved toward the stored prompt `modify` and away
-- from the stored prompt `neutral` by casebase.similar_composed (see its file for the
-- rule). The two prompts must be in casebase.prompts for the space (`casebase prompts
-- add`): SQL cannot run a text tower. The neutral prompt defaults to 'no finding', the
-- text `casebase train` pairs with a study without findings (the same default as the
-- Python client's). Like similar_cases, the study and (unless exclude_same_patient is
-- false) its patient are excluded, and the modality defaults to the study's.
CREATE OR REPLACE FUNCTION casebase.similar_cases_modified(
    study_id text,
    modify text,
    modify_weight double precision DEFAULT 1.0,
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
    neutral text DEFAULT 'no finding'
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    sp casebase.embedding_space;
    qi record;
    prompts text[] := ARRAY[btrim(modify, E' \t\n\r'), btrim(neutral, E' \t\n\r')];
    what text[] := ARRAY['modify', 'neutral'];
    vec vector;
    vecs vector[] := ARRAY[]::vector[];
BEGIN
    FOR i IN 1..2 LOOP
        IF prompts[i] IS NULL OR prompts[i] = '' THEN
            RAISE EXCEPTION 'the % text is empty', what[i] USING ERRCODE = '22023';
        END IF;
        IF length(prompts[i]) > 300 THEN
            RAISE EXCEPTION 'the % text has % characters; at most 300', what[i],
                length(prompts[i]) USING ERRCODE = '22023';
        END IF;
    END LOOP;
    sp := casebase._space(space);
    FOR i IN 1..2 LOOP
        SELECT p.vec INTO vec FROM casebase.prompt_embedding p
        WHERE p.space_id = sp.space_id AND p.prompt = prompts[i];
        IF NOT FOUND THEN
            RAISE EXCEPTION 'prompt % has no vector in space %: casebase prompts add --space % %',
                quote_literal(prompts[i]), sp.name, sp.name, quote_literal(prompts[i])
                USING ERRCODE = '22023';
        END IF;
        vecs := array_append(vecs, vec);
    END LOOP;
    SELECT * INTO qi FROM casebase.query_image(similar_cases_modified.study_id, sp.name);
    RETURN QUERY SELECT * FROM casebase.similar_composed(
        q => qi.vec, modify => vecs[1], neutral => vecs[2], modify_weight => modify_weight,
        k => k, modality => coalesce(modality, qi.modality), sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags,
        exclude_patient => CASE WHEN exclude_same_patient IS NOT FALSE THEN qi.patient_key END,
        space => sp.name, views => views, require_flags => require_flags,
        date_from => date_from, date_to => date_to, batches => batches,
        exclude_study => similar_cases_modified.study_id, attributes => attributes,
        exact => exact);
END
$fn$;

ALTER FUNCTION casebase.similar_cases_modified(text, text, double precision, integer, text, text,
    double precision, double precision, text[], boolean, text, text[], text[], date, date, text[],
    jsonb, boolean, text) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.similar_cases_modified(text, text, double precision, integer,
    text, text, double precision, double precision, text[], boolean, text, text[], text[], date,
    date, text[], jsonb, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_cases_modified(text, text, double precision, integer,
    text, text, double precision, double precision, text[], boolean, text, text[], text[], date,
    date, text[], jsonb, boolean, text) TO casebase_analyst, casebase_ingest;
