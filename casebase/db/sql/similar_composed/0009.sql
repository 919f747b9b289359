-- Composed query (revision 0009): "cases like this film, but with X". The query vector is
--     q' = normalize(normalize(q) + w * (normalize(modify) - normalize(neutral)))
-- with modify = t(X) and neutral = t(the neutral prompt), both from the space's own text
-- tower (SQL cannot run one: the client computes them, or casebase.prompts holds them;
-- casebase.similar_cases_modified looks them up there). The text step moves the image
-- query along the direction from "nothing in particular" to X in the model's joint
-- space, so what the film shows stays in the query. w = 0 is the plain search, to the
-- bit (q is used as given); w runs 0-10.
-- The search is similar_to_vector's, with every filter (its builder, casebase._filter,
-- checks and applies them); rows are its rows, their distance is to q', and route says
-- composed/<its route>.
CREATE OR REPLACE FUNCTION casebase.similar_composed(
    q vector,
    modify vector,
    neutral vector,
    modify_weight double precision DEFAULT 1.0,
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
    exact boolean DEFAULT false
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    f casebase.search_filter;
    composed vector;
    which text;
BEGIN
    f := casebase._filter(
        k => k, space => space, modality => modality, sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags, exclude_patient => exclude_patient,
        views => views, require_flags => require_flags, date_from => date_from,
        date_to => date_to, batches => batches, exclude_study => exclude_study,
        attributes => attributes);
    -- NaN sorts above every number, so it fails the range too.
    IF modify_weight IS NULL OR NOT (modify_weight >= 0 AND modify_weight <= 10) THEN
        RAISE EXCEPTION 'modify_weight must be between 0 and 10, got %', modify_weight
            USING ERRCODE = '22023';
    END IF;
    which := CASE WHEN q IS NULL THEN 'query' WHEN modify IS NULL THEN 'modify'
                  WHEN neutral IS NULL THEN 'neutral' END;
    IF which IS NOT NULL THEN
        RAISE EXCEPTION 'the % vector is NULL', which USING ERRCODE = '22023';
    END IF;
    which := CASE WHEN vector_dims(q) <> f.dim THEN 'query'
                  WHEN vector_dims(modify) <> f.dim THEN 'modify'
                  WHEN vector_dims(neutral) <> f.dim THEN 'neutral' END;
    IF which IS NOT NULL THEN
        RAISE EXCEPTION 'the % vector has % dimensions; space % has %', which,
            vector_dims(CASE which WHEN 'query' THEN q WHEN 'modify' THEN modify ELSE neutral END),
            f.space, f.dim USING ERRCODE = '22023';
    END IF;
    IF modify_weight = 0 THEN
        composed := q;
    ELSE
        SELECT l2_normalize(array_agg(t.a + modify_weight * (t.b - t.c) ORDER BY t.i)::vector)
        INTO composed
        FROM unnest(l2_normalize(q)::real[], l2_normalize(modify)::real[],
                    l2_normalize(neutral)::real[]) WITH ORDINALITY AS t(a, b, c, i);
        IF vector_norm(composed) = 0 THEN
            RAISE EXCEPTION 'the composed query vector is zero (the text step cancels the '
                'image): lower modify_weight' USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN QUERY
    SELECT r.rank, r.study_id, r.distance, r.similarity, r.modality, r.age, r.sex, r.view,
           r.flags, r.study_date, r.impression, r.image_id, 'composed/' || r.route, r.sources,
           r.score
    FROM casebase.similar_to_vector(
        q => composed, k => k, modality => f.modality, sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags, exclude_patient => exclude_patient,
        space => f.space, views => views, require_flags => require_flags,
        date_from => date_from, date_to => date_to, batches => batches,
        exclude_study => exclude_study, attributes => attributes, exact => exact) r;
END
$fn$;

ALTER FUNCTION casebase.similar_composed(vector, vector, vector, double precision, integer, text,
    text, double precision, double precision, text[], text, text, text[], text[], date, date,
    text[], text, jsonb, boolean) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.similar_composed(vector, vector, vector, double precision,
    integer, text, text, double precision, double precision, text[], text, text, text[], text[],
    date, date, text[], text, jsonb, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_composed(vector, vector, vector, double precision,
    integer, text, text, double precision, double precision, text[], text, text, text[], text[],
    date, date, text[], text, jsonb, boolean) TO casebase_analyst, casebase_ingest;
