-- The one filter contract (revision 0007). Every search function (similar_to_vector,
-- similar_cases, hybrid_search, and any route added later) turns its filter arguments
-- into a casebase.search_filter here, and only here: the same validation and guardrails
-- for every path, and one WHERE clause over the embedding row alias "e".
--
-- The predicate never holds a filter value as text: it reads each value from the
-- returned record itself, bound as parameter $1 of the caller's statement
-- (EXECUTE ... USING f, ...). PL/pgSQL passes USING values as constants, so the planner
-- folds ($1).sex to 'F' and estimates and indexes work as with literal values.
-- Every argument is required (no defaults), so a caller cannot leave one out by mistake.
--
-- Revision 0010: a filter on the quality flags casebase raises also names the flag_mask
-- values that can pass it (casebase._flag_masks, read from the same record), an index
-- condition of each leaf's covering index; the array conditions stay, and decide.
CREATE OR REPLACE FUNCTION casebase._filter(
    k integer,
    space text,
    modality text,
    sex text,
    age_min double precision,
    age_max double precision,
    exclude_flags text[],
    exclude_patient text,
    views text[],
    require_flags text[],
    date_from date,
    date_to date,
    batches text[],
    exclude_study text,
    attributes jsonb
)
RETURNS casebase.search_filter
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    f casebase.search_filter;
    sp casebase.embedding_space;
    max_k integer;
    cond text[] := ARRAY[]::text[];
BEGIN
    SELECT value::integer INTO max_k FROM casebase.setting WHERE key = 'max_k';
    IF k IS NULL OR k < 1 OR k > coalesce(max_k, 1000) THEN
        RAISE EXCEPTION 'k must be between 1 and %, got %', coalesce(max_k, 1000), k
            USING ERRCODE = '22023';
    END IF;
    IF sex IS NOT NULL AND sex NOT IN ('F', 'M', 'O') THEN
        RAISE EXCEPTION 'sex must be F, M or O, got %', quote_literal(sex) USING ERRCODE = '22023';
    END IF;
    -- NaN sorts above every number in PostgreSQL, so it is outside the range too.
    IF age_min < 0 OR age_min > 130 OR age_max < 0 OR age_max > 130 THEN
        RAISE EXCEPTION 'age % is outside 0-130',
            CASE WHEN age_min < 0 OR age_min > 130 THEN age_min ELSE age_max END
            USING ERRCODE = '22023';
    END IF;
    IF age_min > age_max THEN
        RAISE EXCEPTION 'impossible age range: % to %', age_min, age_max USING ERRCODE = '22023';
    END IF;
    IF date_from > date_to THEN
        RAISE EXCEPTION 'impossible date range: % to %', date_from, date_to
            USING ERRCODE = '22023';
    END IF;
    -- An empty list of views or batches would match nothing: say so instead.
    IF cardinality(views) = 0 OR cardinality(batches) = 0 THEN
        RAISE EXCEPTION '% is an empty list (it would match nothing): pass NULL for any',
            CASE WHEN cardinality(views) = 0 THEN 'views' ELSE 'batches' END
            USING ERRCODE = '22023';
    END IF;
    IF array_position(views, NULL) IS NOT NULL OR array_position(batches, NULL) IS NOT NULL
        OR array_position(exclude_flags, NULL) IS NOT NULL
        OR array_position(require_flags, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'filter lists (views, batches, exclude_flags, require_flags) '
            'cannot hold NULL' USING ERRCODE = '22023';
    END IF;
    IF attributes IS NOT NULL AND jsonb_typeof(attributes) <> 'object' THEN
        RAISE EXCEPTION 'attributes must be a JSON object, got %', attributes
            USING ERRCODE = '22023';
    END IF;

    sp := casebase._space(space);
    f.space_id := sp.space_id;
    f.space := sp.name;
    f.dim := sp.dim;
    f.modality := casebase._leaf(sp, modality);
    f.leaf := format('casebase.%I', format('embedding_s%s_%s', sp.space_id, lower(f.modality)));
    f.sex := sex;
    f.age_min := age_min;
    f.age_max := age_max;
    f.exclude_flags := nullif(exclude_flags, ARRAY[]::text[]);
    f.exclude_patient := exclude_patient;
    f.views := views;
    f.require_flags := nullif(require_flags, ARRAY[]::text[]);
    f.date_from := date_from;
    f.date_to := date_to;
    f.batches := batches;
    f.exclude_study := exclude_study;
    f.attributes := attributes;

    -- Only the filters that are set, so the plan of an unfiltered search stays plain.
    IF f.sex IS NOT NULL THEN
        cond := array_append(cond, 'e.sex = ($1).sex');
    END IF;
    IF f.age_min IS NOT NULL THEN
        cond := array_append(cond, 'e.age >= ($1).age_min');
    END IF;
    IF f.age_max IS NOT NULL THEN
        cond := array_append(cond, 'e.age <= ($1).age_max');
    END IF;
    IF f.exclude_flags IS NOT NULL THEN
        cond := array_append(cond, 'NOT (e.flags && ($1).exclude_flags)');
    END IF;
    IF f.exclude_patient IS NOT NULL THEN
        cond := array_append(cond, 'e.patient_key IS DISTINCT FROM ($1).exclude_patient');
    END IF;
    IF f.views IS NOT NULL THEN
        cond := array_append(cond, 'e.view = ANY (($1).views)');
    END IF;
    IF f.require_flags IS NOT NULL THEN
        cond := array_append(cond, 'e.flags @> ($1).require_flags');
    END IF;
    IF casebase._flag_masks(f.require_flags, f.exclude_flags) IS NOT NULL THEN
        cond := array_append(cond,
            'e.flag_mask = ANY (casebase._flag_masks(($1).require_flags, ($1).exclude_flags))');
    END IF;
    IF f.date_from IS NOT NULL THEN
        cond := array_append(cond, 'e.study_date >= ($1).date_from');
    END IF;
    IF f.date_to IS NOT NULL THEN
        cond := array_append(cond, 'e.study_date <= ($1).date_to');
    END IF;
    IF f.batches IS NOT NULL THEN
        cond := array_append(cond, 'e.batch = ANY (($1).batches)');
    END IF;
    IF f.exclude_study IS NOT NULL THEN
        cond := array_append(cond, 'e.study_id <> ($1).exclude_study');
    END IF;
    IF f.attributes IS NOT NULL THEN
        cond := array_append(cond, 'EXISTS (SELECT 1 FROM casebase.study fa '
            'WHERE fa.study_pk = e.study_pk AND fa.attributes @> ($1).attributes)');
    END IF;
    f.predicate := CASE WHEN cardinality(cond) = 0 THEN 'true'
                        ELSE array_to_string(cond, ' AND ') END;
    RETURN f;
END
$fn$;

ALTER FUNCTION casebase._filter(integer, text, text, text, double precision, double precision,
    text[], text, text[], text[], date, date, text[], text, jsonb) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase._filter(integer, text, text, text, double precision,
    double precision, text[], text, text[], text[], date, date, text[], text, jsonb) FROM PUBLIC;
