-- Revision 0011 (issue #15): a filtered walk of the HNSW graph asks it for more passing
-- rows than it returns. pgvector's iterative scan stops as soon as the LIMIT's rows have
-- passed the filter; at 10 % selectivity on 700k rows the first beam of 1000 holds only
-- about the 100 rows asked for, so the nearest passing rows are read from the beam's
-- fringe (recall 0.979 at k = 100, against 0.990 unfiltered with the same beam). Asking
-- for `filtered_oversample` x as many (measured by `casebase tune` on the leaf's own
-- vectors, at the most selective filter the graph route takes; 1 until measured) makes
-- the scan go on walking, and the nearest k of those rows are returned. Unfiltered
-- searches are unchanged. RAISE DEBUG names the route and the first LIMIT
-- (SET client_min_messages = debug1 to see them). Otherwise as 0010, whose
-- notes follow (the two costs that made search slower than the embedded vector databases):
--
-- 1. The exact routes rank from a compact copy. Each leaf's covering index carries
--    vec_half (the vector in half precision) and leads with the columns filters name by
--    equality (ensure_embedding_partition/0010.sql), so one index-only scan finds the
--    passing rows and their half-precision distances; only the few nearest are fetched in
--    full precision and re-ranked (the old route fetched every passing row by key, ~3 µs a
--    row). The answer stays exact: a half-precision cosine distance is within EPS = 0.0025
--    of the full one (each component carries a relative rounding error <= 2^-11, so the
--    similarity moves by <= ~4 x 2^-11 = 0.00195, plus float32 sums), hence every row of the
--    true L nearest has a half distance <= t + 2 EPS, t the L-th smallest half distance:
--    those are the rows re-ranked. Leaves of more than 1024 dimensions (vec_half NULL: too
--    big for a B-tree row) keep the 0006 route.
-- 2. The HNSW route walks the beam its leaf needs. `casebase tune` measures, on the leaf's
--    own vectors, the smallest hnsw.ef_search that reaches its recall target at k = 10 and
--    100, how many images a study has there, and the filtered-row count at which the exact
--    route stops being the faster (setting row 'tune.<leaf>', JSON); without it, the 0005
--    defaults (ef_search 4 x the images asked for, exact_threshold). Fewer studies than
--    asked for from the graph first asks it for twice the images, then answers exactly;
--    so does a graph answer whose nearest study is farther than the leaf's calibrated
--    trust_distance (1.5 x the farthest nearest neighbour `casebase tune` saw): the walk
--    did not reach the query's region (a narrow beam in a poorly connected graph).
-- The router reads the leaf's row count instead of running EXPLAIN when nothing is
-- filtered. The exact scans need the index-only path: bitmap and sequential scans are off
-- inside this function (a bitmap heap scan would read vec_half from TOAST row by row).
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
SET enable_bitmapscan = off
SET enable_seqscan = off
SET enable_sort = on
AS $fn$
DECLARE
    f casebase.search_filter;
    tuned jsonb;
    threshold bigint;
    ef_factor integer;
    per_study double precision;
    leaf_rows double precision;
    est double precision;
    plan jsonb;
    route text;
    half boolean;
    k_img integer;
    k_first integer;
    ef integer;
    found_rows casebase.similar_case[];
    near_rows bigint;
    sql text;
    near_limit text;
    limits text[];
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
    SELECT max(s.value) FILTER (WHERE s.key LIKE 'tune.%')::jsonb,
           max(s.value) FILTER (WHERE s.key = 'exact_threshold')::bigint,
           max(s.value) FILTER (WHERE s.key = 'hnsw_ef_factor')::integer
    INTO tuned, threshold, ef_factor
    FROM casebase.setting s
    WHERE s.key IN (format('tune.embedding_s%s_%s', f.space_id, lower(f.modality)),
                    'exact_threshold', 'hnsw_ef_factor');
    threshold := coalesce((tuned ->> 'exact_threshold')::bigint, threshold, 20000);
    -- Images per study in this leaf (2 until measured): how many images to ask for.
    per_study := greatest(1, coalesce((tuned ->> 'images_per_study')::double precision, 2));
    half := f.dim <= 1024;

    -- Route on an estimate of the filtered row count, not on the planner's choice.
    -- The leaf's rows as the planner counts them: its density at the last ANALYZE times
    -- its size now (-1 when never analyzed: then EXPLAIN decides).
    SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN c.reltuples
                ELSE c.reltuples / c.relpages * (pg_catalog.pg_relation_size(c.oid)
                     / current_setting('block_size')::integer) END
    INTO leaf_rows FROM pg_catalog.pg_class c WHERE c.oid = f.leaf::regclass;
    IF (f.predicate = 'true' OR leaf_rows <= threshold) AND leaf_rows >= 0 THEN
        est := leaf_rows;  -- no filter, or a leaf so small that any filter routes exactly
    ELSE
        -- Without _filter's flag-mask condition: it repeats the flag conditions, and the
        -- planner would count their selectivity twice.
        EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM %s e WHERE %s', f.leaf,
                replace(f.predicate, ' AND e.flag_mask = ANY (casebase._flag_masks('
                    '($1).require_flags, ($1).exclude_flags))', ''))
            INTO plan USING f, q;
        est := (plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision;
    END IF;
    route := CASE
        WHEN exact THEN 'exact'
        WHEN f.attributes IS NOT NULL OR est <= threshold THEN 'exact-filtered'
        ELSE 'hnsw' END;

    IF route = 'hnsw' THEN
        k_img := least(ceil(k * per_study)::integer, 2000);
        -- A filter: more passing rows than wanted, so the scan walks past the beam's fringe.
        k_first := CASE WHEN est < leaf_rows THEN least(2000, ceil(k_img * greatest(1,
                coalesce((tuned ->> 'filtered_oversample')::double precision, 1)))::integer)
            ELSE k_img END;
        limits := ARRAY[k_first::text, least(k_first * 2, 2000)::text];
        -- The tuned beam: measured at k = 10 and 100, linear in k between and above.
        ef := CASE
            WHEN tuned -> 'ef_search' IS NULL THEN
                least(1000, greatest(k_img * coalesce(ef_factor, 2), 200))
            WHEN k <= 10 THEN (tuned -> 'ef_search' ->> '10')::integer
            ELSE ceil((tuned -> 'ef_search' ->> '10')::integer
                + ((tuned -> 'ef_search' ->> '100')::integer
                   - (tuned -> 'ef_search' ->> '10')::integer) * (k - 10) / 90.0)::integer
            END;
        PERFORM set_config('hnsw.ef_search', least(1000, greatest(ef, 1))::text, true);
        -- The graph, not a sort of the rows a B-tree finds: the router chose this route
        -- from the estimate and the leaf's calibrated threshold.
        PERFORM set_config('enable_sort', 'off', true);
        PERFORM set_config('hnsw.max_scan_tuples',
            greatest(20000, least(2000000, (k_first * 20 / greatest(est / greatest(
                leaf_rows, 1), 0.0005))::bigint))::text, true);
        sql := format($q$
            WITH cand AS MATERIALIZED (
                SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                       e.study_date, e.vec::vector(%1$s) <=> $2::vector(%1$s) AS distance
                FROM %2$s e
                WHERE %3$s
                ORDER BY e.vec::vector(%1$s) <=> $2::vector(%1$s)
                LIMIT %%NEAR%%
            ),
            near AS (SELECT * FROM cand)$q$, f.dim, f.leaf, f.predicate);
    ELSE
        -- The k studies nearest by their best image are among the L nearest images
        -- whenever those hold k studies; else take L x 4, then every image.
        near_limit := ceil(k * per_study * 1.25)::text;
        limits := ARRAY[near_limit, (near_limit::integer * 4)::text, 'ALL'];
        IF half THEN
            sql := format($q$
                WITH c16 AS MATERIALIZED (
                    SELECT e.image_pk, e.vec_half <=> $2::halfvec(%1$s) AS d16
                    FROM %2$s e
                    WHERE %3$s
                ),
                cut AS (SELECT c.d16 FROM c16 c ORDER BY c.d16 OFFSET %%CUT%% LIMIT 1),
                cand AS MATERIALIZED (
                    SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                           e.study_date, e.vec::vector(%1$s) <=> $2::vector(%1$s) AS distance
                    FROM %2$s e
                    WHERE e.space_id = %4$s AND e.modality = %5$L AND e.image_pk = ANY (ARRAY(
                        SELECT c.image_pk FROM c16 c
                        WHERE c.d16 <= coalesce((SELECT d16 FROM cut), 'infinity') + 0.005))
                ),
                near AS (SELECT * FROM cand ORDER BY distance, study_pk LIMIT %%NEAR%%)$q$,
                f.dim, f.leaf, f.predicate, f.space_id, f.modality);
        ELSE
            IF est <= threshold THEN
                -- Few rows pass: find them in the covering index (no heap visit for the
                -- rows the filter drops), then fetch only their vectors, by primary key.
                ids_cte := format('ids AS MATERIALIZED (SELECT e.image_pk FROM %s e WHERE %s), ',
                    f.leaf, f.predicate);
                cand_where := format('e.space_id = %s AND e.modality = %L '
                    'AND e.image_pk = ANY (ARRAY(SELECT image_pk FROM ids))', f.space_id,
                    f.modality);
            END IF;
            sql := format($q$
                WITH %4$s cand AS MATERIALIZED (
                    SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                           e.study_date, e.vec::vector(%1$s) <=> $2::vector(%1$s) AS distance
                    FROM %2$s e
                    WHERE %3$s
                ),
                near AS (SELECT * FROM cand ORDER BY distance, study_pk LIMIT %%NEAR%%)$q$,
                f.dim, f.leaf, coalesce(cand_where, f.predicate), ids_cte);
        END IF;
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
        SELECT (SELECT array_agg(ROW(
            t.rk,
            t.study_id, t.distance, 1 - t.distance, %2$L, t.age, t.sex, t.view, t.flags,
            t.study_date, r.impression, t.image_pk, %3$L, ARRAY['image'], 1 - t.distance
        )::casebase.similar_case ORDER BY t.distance, t.study_id)
        FROM top t
        LEFT JOIN casebase.report r ON r.study_pk = t.study_pk),
        (SELECT count(*) FROM near)$q$, k, f.modality, route);

    RAISE DEBUG 'similar_to_vector: route %, first limit %', route, limits[1];
    -- Until the nearest images hold k studies, or they were every image there is.
    FOREACH near_limit IN ARRAY limits LOOP
        EXECUTE replace(replace(sql, '%NEAR%', near_limit), '%CUT%',
                CASE WHEN near_limit = 'ALL' THEN '2147483646'
                     ELSE (near_limit::integer - 1)::text END)
            INTO found_rows, near_rows USING f, q;
        EXIT WHEN coalesce(cardinality(found_rows), 0) >= k OR near_limit = 'ALL'
            OR near_rows < near_limit::integer;
    END LOOP;

    -- The approximate scan may stop short (max_scan_tuples), or never reach the query's
    -- region (its nearest is farther than any the calibration saw): then answer exactly.
    IF route = 'hnsw' AND (coalesce(cardinality(found_rows), 0) < k
            OR (found_rows[1]).distance > (tuned ->> 'trust_distance')::double precision) THEN
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
