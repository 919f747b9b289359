-- Revision 0006: the exact route reads the filter columns from one covering index.
-- A selective filter (1 % of a 700k-row leaf) spent most of its time in a BitmapAnd of
-- the GIN flags index (105k entries for a common flag) and the (sex, age) B-tree, then
-- visited ~1.2 heap blocks per candidate only to drop most of them. The B-tree on
-- (sex, age) now carries every other filter column (INCLUDE), so an index-only scan
-- evaluates the whole filter, and the vectors of the rows that pass are fetched by
-- primary key afterwards (benchmarks/search.py, 1M rows: see README).
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
SET search_path = pg_catalog, casebase, public
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
SET hnsw.max_scan_tuples = 20000
AS $fn$
DECLARE
    sp casebase.embedding_space;
    m text;
    leaf text;
    cond text[] := ARRAY[]::text[];
    where_sql text;
    vec_expr text;
    q_expr text;
    max_k integer;
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
    SELECT value::integer INTO max_k FROM casebase.setting WHERE key = 'max_k';
    SELECT value::bigint INTO threshold FROM casebase.setting WHERE key = 'exact_threshold';
    SELECT value::integer INTO ef_factor FROM casebase.setting WHERE key = 'hnsw_ef_factor';
    IF k IS NULL OR k < 1 OR k > coalesce(max_k, 1000) THEN
        RAISE EXCEPTION 'k must be between 1 and %, got %', coalesce(max_k, 1000), k
            USING ERRCODE = '22023';
    END IF;
    IF q IS NULL THEN
        RAISE EXCEPTION 'the query vector is NULL' USING ERRCODE = '22023';
    END IF;
    IF age_min IS NOT NULL AND age_max IS NOT NULL AND age_min > age_max THEN
        RAISE EXCEPTION 'impossible age range: % to %', age_min, age_max USING ERRCODE = '22023';
    END IF;
    IF date_from IS NOT NULL AND date_to IS NOT NULL AND date_from > date_to THEN
        RAISE EXCEPTION 'impossible date range: % to %', date_from, date_to
            USING ERRCODE = '22023';
    END IF;
    IF sex IS NOT NULL AND sex NOT IN ('F', 'M', 'O') THEN
        RAISE EXCEPTION 'sex must be F, M or O, got %', quote_literal(sex) USING ERRCODE = '22023';
    END IF;
    sp := casebase._space(space);
    IF vector_dims(q) <> sp.dim THEN
        RAISE EXCEPTION 'the query vector has % dimensions; space % has %',
            vector_dims(q), sp.name, sp.dim USING ERRCODE = '22023';
    END IF;
    m := casebase._leaf(sp, modality);
    leaf := format('casebase.%I', format('embedding_s%s_%s', sp.space_id, lower(m)));
    vec_expr := format('e.vec::vector(%s)', sp.dim);
    q_expr := format('$1::vector(%s)', sp.dim);

    -- Filters reach SQL only as parameters ($2 ...), never as text.
    IF sex IS NOT NULL THEN cond := array_append(cond, 'e.sex = $2'); END IF;
    IF age_min IS NOT NULL THEN cond := array_append(cond, 'e.age >= $3'); END IF;
    IF age_max IS NOT NULL THEN cond := array_append(cond, 'e.age <= $4'); END IF;
    IF exclude_flags IS NOT NULL AND cardinality(exclude_flags) > 0 THEN
        cond := array_append(cond, 'NOT (e.flags && $5)');
    END IF;
    IF exclude_patient IS NOT NULL THEN
        cond := array_append(cond, 'e.patient_key IS DISTINCT FROM $6');
    END IF;
    IF views IS NOT NULL THEN cond := array_append(cond, 'e.view = ANY ($7)'); END IF;
    IF require_flags IS NOT NULL AND cardinality(require_flags) > 0 THEN
        cond := array_append(cond, 'e.flags @> $8');
    END IF;
    IF date_from IS NOT NULL THEN cond := array_append(cond, 'e.study_date >= $9'); END IF;
    IF date_to IS NOT NULL THEN cond := array_append(cond, 'e.study_date <= $10'); END IF;
    IF batches IS NOT NULL THEN cond := array_append(cond, 'e.batch = ANY ($11)'); END IF;
    IF exclude_study IS NOT NULL THEN cond := array_append(cond, 'e.study_id <> $12'); END IF;
    IF attributes IS NOT NULL THEN
        cond := array_append(cond, 'EXISTS (SELECT 1 FROM casebase.study s '
            || 'WHERE s.study_pk = e.study_pk AND s.attributes @> $13)');
    END IF;
    where_sql := CASE WHEN cardinality(cond) = 0 THEN 'true'
                      ELSE array_to_string(cond, ' AND ') END;

    -- Route on an estimate of the filtered row count, not on the planner's choice.
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM %s e WHERE %s', leaf, where_sql)
        INTO plan
        USING q, sex, age_min, age_max, exclude_flags, exclude_patient, views, require_flags,
              date_from, date_to, batches, exclude_study, attributes;
    est := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
    route := CASE
        WHEN exact THEN 'exact'
        WHEN attributes IS NOT NULL OR est <= coalesce(threshold, 20000) THEN 'exact-filtered'
        ELSE 'hnsw' END;

    IF route = 'hnsw' THEN
        -- Several images may belong to one study: ask for more images than studies.
        k_img := least(k * 2, 2000);
        PERFORM set_config('hnsw.ef_search',
            least(1000, greatest(k_img * coalesce(ef_factor, 2), 200))::text, true);
        PERFORM set_config('hnsw.max_scan_tuples',
            greatest(20000, least(2000000, (k_img * 20 / greatest(est / greatest(
                (SELECT reltuples FROM pg_class WHERE oid = leaf::regclass), 1), 0.0005))::bigint
            ))::text, true);
        sql := format($q$
            WITH cand AS MATERIALIZED (
                SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                       e.study_date, %1$s <=> %2$s AS distance
                FROM %3$s e
                WHERE %4$s
                ORDER BY %1$s <=> %2$s
                LIMIT %5$s
            ),
            near AS (SELECT * FROM cand)$q$, vec_expr, q_expr, leaf, where_sql, k_img);
    ELSE
        IF est <= coalesce(threshold, 20000) THEN
            -- Few rows pass: find them in the covering index (no heap visit for the rows
            -- the filter drops), then fetch only their vectors, by primary key.
            ids_cte := format('ids AS MATERIALIZED (SELECT e.image_pk FROM %s e WHERE %s), ',
                leaf, where_sql);
            cand_where := format('e.space_id = %s AND e.modality = %L '
                'AND e.image_pk = ANY (ARRAY(SELECT image_pk FROM ids))', sp.space_id, m);
        END IF;
        sql := format($q$
            WITH %5$s cand AS MATERIALIZED (
                SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                       e.study_date, %1$s <=> %2$s AS distance
                FROM %3$s e
                WHERE %4$s
            ),
            near AS (SELECT * FROM cand ORDER BY distance, study_pk LIMIT %%NEAR%%)$q$,
            vec_expr, q_expr, leaf, coalesce(cand_where, where_sql), ids_cte);
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
        LEFT JOIN casebase.report r ON r.study_pk = t.study_pk$q$, k, m, route);

    -- An exact route whose 4k nearest images hold fewer than k studies runs again on all.
    LOOP
        EXECUTE replace(sql, '%NEAR%', near_limit) INTO found_rows
            USING q, sex, age_min, age_max, exclude_flags, exclude_patient, views,
                  require_flags, date_from, date_to, batches, exclude_study, attributes;
        EXIT WHEN route = 'hnsw' OR near_limit = 'ALL'
            OR coalesce(cardinality(found_rows), 0) >= k;
        near_limit := 'ALL';
    END LOOP;

    -- The approximate scan may stop short (max_scan_tuples): then answer exactly.
    IF route = 'hnsw' AND coalesce(cardinality(found_rows), 0) < k THEN
        RETURN QUERY SELECT * FROM casebase.similar_to_vector(
            q, k, m, sex, age_min, age_max, exclude_flags, exclude_patient, sp.name, views,
            require_flags, date_from, date_to, batches, exclude_study, attributes, true);
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM unnest(found_rows);
END
$fn$;

REVOKE ALL ON FUNCTION casebase.similar_to_vector(vector, integer, text, text, double precision,
    double precision, text[], text, text, text[], text[], date, date, text[], text, jsonb,
    boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_to_vector(vector, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean) TO casebase_analyst, casebase_ingest;
