-- Revision 0007: the filters come from casebase._filter, the one builder of every search
-- function (validation, guardrails, leaf, WHERE clause). Its record is parameter $1 of
-- every statement here and the query vector $2. Owned by casebase_owner, pg_temp last in
-- the search path. The routes are 0006's (see its file).
CREATE OR REPLACE FUNCTION casebase.similar_to_vector(
    q vector,
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
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
SET hnsw.max_scan_tuples = 20000
AS $fn$
DECLARE
    f casebase.search_filter;
    vec_expr text;
    q_expr text;
    threshold bigint;
    ef_factor integer;
    est double precision;
    plan jsonb;
    route text;
    k_img integer;
    found_rows casebase.similar_case[];
    sql text;
    near_limit text := 'ALL';
    ids_cte text := '';
    cand_where text;
BEGIN
    f := casebase._filter(
        k => k, space => space, modality => modality, sex => sex, age_min => age_min,
        age_max => age_max, exclude_flags => exclude_flags, exclude_patient => exclude_patient,
        views => views, require_flags => require_flags, date_from => date_from,
        date_to => date_to, batches => batches, exclude_study => exclude_study,
        attributes => attributes);
    IF q IS NULL THEN
        RAISE EXCEPTION 'the query vector is NULL' USING ERRCODE = '22023';
    END IF;
    IF vector_dims(q) <> f.dim THEN
        RAISE EXCEPTION 'the query vector has % dimensions; space % has %',
            vector_dims(q), f.space, f.dim USING ERRCODE = '22023';
    END IF;
    SELECT value::bigint INTO threshold FROM casebase.setting WHERE key = 'exact_threshold';
    SELECT value::integer INTO ef_factor FROM casebase.setting WHERE key = 'hnsw_ef_factor';
    vec_expr := format('e.vec::vector(%s)', f.dim);
    q_expr := format('$2::vector(%s)', f.dim);

    -- Route on an estimate of the filtered row count, not on the planner's choice.
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM %s e WHERE %s', f.leaf, f.predicate)
        INTO plan USING f, q;
    est := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
    route := CASE
        WHEN exact THEN 'exact'
        WHEN f.attributes IS NOT NULL OR est <= coalesce(threshold, 20000) THEN 'exact-filtered'
        ELSE 'hnsw' END;

    IF route = 'hnsw' THEN
        -- Several images may belong to one study: ask for more images than studies.
        k_img := least(k * 2, 2000);
        PERFORM set_config('hnsw.ef_search',
            least(1000, greatest(k_img * coalesce(ef_factor, 2), 200))::text, true);
        PERFORM set_config('hnsw.max_scan_tuples',
            greatest(20000, least(2000000, (k_img * 20 / greatest(est / greatest(
                (SELECT reltuples FROM pg_catalog.pg_class WHERE oid = f.leaf::regclass), 1),
                0.0005))::bigint))::text, true);
        sql := format($q$
            WITH cand AS MATERIALIZED (
                SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                       e.study_date, %1$s <=> %2$s AS distance
                FROM %3$s e
                WHERE %4$s
                ORDER BY %1$s <=> %2$s
                LIMIT %5$s
            ),
            near AS (SELECT * FROM cand)$q$, vec_expr, q_expr, f.leaf, f.predicate, k_img);
    ELSE
        IF est <= coalesce(threshold, 20000) THEN
            -- Few rows pass: find them in the covering index (no heap visit for the rows
            -- the filter drops), then fetch only their vectors, by primary key.
            ids_cte := format('ids AS MATERIALIZED (SELECT e.image_pk FROM %s e WHERE %s), ',
                f.leaf, f.predicate);
            cand_where := format('e.space_id = %s AND e.modality = %L '
                'AND e.image_pk = ANY (ARRAY(SELECT image_pk FROM ids))', f.space_id, f.modality);
        END IF;
        sql := format($q$
            WITH %5$s cand AS MATERIALIZED (
                SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                       e.study_date, %1$s <=> %2$s AS distance
                FROM %3$s e
                WHERE %4$s
            ),
            near AS (SELECT * FROM cand ORDER BY distance, study_pk LIMIT %%NEAR%%)$q$,
            vec_expr, q_expr, f.leaf, coalesce(cand_where, f.predicate), ids_cte);
        -- The k studies nearest by their best image are among the 4k nearest images
        -- whenever those hold k studies; else (many images per study) take them all.
        near_limit := (k * 4)::text;
    END IF;
    sql := sql || format($q$,
        best AS (
            SELECT DISTINCT ON (c.study_pk) c.*
            FROM near c
            ORDER BY c.study_pk, c.distance, c.image_pk
        ),
        top AS (
            SELECT b.*, (row_number() OVER (ORDER BY b.distance, b.study_id))::integer AS rk
            FROM best b ORDER BY b.distance, b.study_id LIMIT %1$s
        )
        SELECT array_agg(ROW(
            t.rk,
            t.study_id, t.distance, 1 - t.distance, %2$L, t.age, t.sex, t.view, t.flags,
            t.study_date, r.impression, t.image_pk, %3$L, ARRAY['image'], 1 - t.distance
        )::casebase.similar_case ORDER BY t.distance, t.study_id)
        FROM top t
        LEFT JOIN casebase.report r ON r.study_pk = t.study_pk$q$, k, f.modality, route);

    -- An exact route whose 4k nearest images hold fewer than k studies runs again on all.
    LOOP
        EXECUTE replace(sql, '%NEAR%', near_limit) INTO found_rows USING f, q;
        EXIT WHEN route = 'hnsw' OR near_limit = 'ALL'
            OR coalesce(cardinality(found_rows), 0) >= k;
        near_limit := 'ALL';
    END LOOP;

    -- The approximate scan may stop short (max_scan_tuples): then answer exactly.
    IF route = 'hnsw' AND coalesce(cardinality(found_rows), 0) < k THEN
        RETURN QUERY SELECT * FROM casebase.similar_to_vector(
            q => q, k => k, modality => f.modality, sex => sex, age_min => age_min,
            age_max => age_max, exclude_flags => exclude_flags,
            exclude_patient => exclude_patient, space => f.space, views => views,
            require_flags => require_flags, date_from => date_from, date_to => date_to,
            batches => batches, exclude_study => exclude_study, attributes => attributes,
            exact => true);
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM unnest(found_rows);
END
$fn$;

ALTER FUNCTION casebase.similar_to_vector(vector, integer, text, text, double precision,
    double precision, text[], text, text, text[], text[], date, date, text[], text, jsonb,
    boolean) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.similar_to_vector(vector, integer, text, text, double precision,
    double precision, text[], text, text, text[], text[], date, date, text[], text, jsonb,
    boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_to_vector(vector, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean) TO casebase_analyst, casebase_ingest;
