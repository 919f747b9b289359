-- Similar-case search for analysts, the Python client and the CLI (revision 0002).
-- One query builder: casebase.similar_to_vector. Everything else calls it.

INSERT INTO casebase.setting (key, value) VALUES
    ('max_k', '1000'),            -- the cap on k
    ('exact_threshold', '20000')  -- filtered rows at or under which the exact scan is used
ON CONFLICT (key) DO NOTHING;

CREATE TYPE casebase.similar_case AS (
    rank integer,
    study_id text,
    distance double precision,
    similarity double precision,
    modality text,
    age real,
    sex text,
    view text,
    flags text[],
    study_date date,
    impression text,
    image_id bigint,
    route text,
    sources text[],
    score double precision
);

-- ------------------------------------------------------------------ helpers
CREATE FUNCTION casebase._space(p_space text)
RETURNS casebase.embedding_space
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public
AS $fn$
DECLARE
    sp casebase.embedding_space;
    n integer;
BEGIN
    IF p_space IS NOT NULL THEN
        SELECT * INTO sp FROM casebase.embedding_space WHERE name = p_space;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown embedding space %', quote_literal(p_space)
                USING ERRCODE = '22023';
        END IF;
        RETURN sp;
    END IF;
    SELECT * INTO sp FROM casebase.embedding_space WHERE is_default;
    IF FOUND THEN
        RETURN sp;
    END IF;
    SELECT count(*) INTO n FROM casebase.embedding_space;
    IF n = 1 THEN
        SELECT * INTO sp FROM casebase.embedding_space;
        RETURN sp;
    END IF;
    RAISE EXCEPTION 'no default embedding space (% exist): pass space => ...', n
        USING ERRCODE = '22023';
END
$fn$;

CREATE FUNCTION casebase._leaf(sp casebase.embedding_space, p_modality text)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public
AS $fn$
DECLARE
    leaves text[];
    m text := p_modality;
BEGIN
    SELECT array_agg(split_part(pg_get_expr(c.relpartbound, c.oid), '''', 2) ORDER BY c.relname)
    INTO leaves
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relnamespace = 'casebase'::regnamespace
      AND p.relname = format('embedding_s%s', sp.space_id);
    IF m IS NULL THEN
        IF cardinality(leaves) = 1 THEN
            m := leaves[1];
        ELSE
            RAISE EXCEPTION 'modality is required: space % holds %', sp.name,
                coalesce(array_to_string(leaves, ', '), 'no studies') USING ERRCODE = '22023';
        END IF;
    END IF;
    IF leaves IS NULL OR NOT m = ANY (leaves) THEN
        RAISE EXCEPTION 'no % studies in space % (it holds %)', quote_literal(m), sp.name,
            coalesce(array_to_string(leaves, ', '), 'none') USING ERRCODE = '22023';
    END IF;
    RETURN m;
END
$fn$;

-- ------------------------------------------------------------------ the query builder
CREATE FUNCTION casebase.similar_to_vector(
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
    est double precision;
    plan jsonb;
    route text;
    k_img integer;
    found_rows casebase.similar_case[];
    sql text;
BEGIN
    SELECT value::integer INTO max_k FROM casebase.setting WHERE key = 'max_k';
    SELECT value::bigint INTO threshold FROM casebase.setting WHERE key = 'exact_threshold';
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
        PERFORM set_config('hnsw.ef_search', greatest(k_img, 200)::text, true);
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
            )$q$, vec_expr, q_expr, leaf, where_sql, k_img);
    ELSE
        sql := format($q$
            WITH cand AS MATERIALIZED (
                SELECT e.study_pk, e.study_id, e.image_pk, e.age, e.sex, e.view, e.flags,
                       e.study_date, %1$s <=> %2$s AS distance
                FROM %3$s e
                WHERE %4$s
            )$q$, vec_expr, q_expr, leaf, where_sql);
    END IF;
    sql := sql || format($q$,
        best AS (
            SELECT DISTINCT ON (c.study_pk) c.*
            FROM cand c
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

    EXECUTE sql INTO found_rows
        USING q, sex, age_min, age_max, exclude_flags, exclude_patient, views, require_flags,
              date_from, date_to, batches, exclude_study, attributes;

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

-- ------------------------------------------------------------------ by study id
CREATE FUNCTION casebase.similar_cases(
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

-- ------------------------------------------------------------------ hybrid (RRF)
-- Image vectors and report full text searched separately, merged by reciprocal
-- rank fusion so that neither modality drowns the other (seed 003).
CREATE FUNCTION casebase.hybrid_search(
    q vector,
    query text,
    k integer DEFAULT 20,
    modality text DEFAULT NULL,
    sex text DEFAULT NULL,
    age_min double precision DEFAULT NULL,
    age_max double precision DEFAULT NULL,
    exclude_flags text[] DEFAULT NULL,
    exclude_patient text DEFAULT NULL,
    space text DEFAULT NULL,
    candidates integer DEFAULT 100,
    rrf_k integer DEFAULT 60
)
RETURNS SETOF casebase.similar_case
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public
AS $fn$
DECLARE
    sp casebase.embedding_space;
    m text;
    tsq tsquery;
BEGIN
    IF query IS NULL OR btrim(query) = '' THEN
        RAISE EXCEPTION 'hybrid search needs query text' USING ERRCODE = '22023';
    END IF;
    sp := casebase._space(space);
    m := casebase._leaf(sp, modality);
    tsq := websearch_to_tsquery('english', query);
    RETURN QUERY
    WITH img AS (
        SELECT v.study_id, v.rank AS r, v.distance
        FROM casebase.similar_to_vector(q, greatest(candidates, k), m, sex, age_min, age_max,
                                        exclude_flags, exclude_patient, sp.name) v
        WHERE q IS NOT NULL
    ),
    txt AS (
        SELECT s.study_id, (row_number() OVER (ORDER BY ts_rank_cd(r.tsv, tsq) DESC,
                                                s.study_id))::integer AS r
        FROM casebase.report r
        JOIN casebase.study s USING (study_pk)
        WHERE r.tsv @@ tsq AND s.modality = m
          AND (hybrid_search.sex IS NULL OR s.sex = hybrid_search.sex)
          AND (age_min IS NULL OR s.age >= age_min)
          AND (age_max IS NULL OR s.age <= age_max)
          AND (exclude_flags IS NULL OR NOT (s.flags && exclude_flags))
          AND (exclude_patient IS NULL OR s.patient_key IS DISTINCT FROM exclude_patient)
        ORDER BY ts_rank_cd(r.tsv, tsq) DESC, s.study_id
        LIMIT greatest(candidates, k)
    ),
    fused AS (
        SELECT coalesce(i.study_id, t.study_id) AS study_id,
               coalesce(1.0 / (rrf_k + i.r), 0) + coalesce(1.0 / (rrf_k + t.r), 0) AS score,
               array_remove(ARRAY[CASE WHEN i.r IS NOT NULL THEN 'image' END,
                                  CASE WHEN t.r IS NOT NULL THEN 'text' END], NULL) AS sources,
               i.distance
        FROM img i
        FULL JOIN txt t ON t.study_id = i.study_id
        ORDER BY 2 DESC, 1
        LIMIT k
    )
    SELECT (row_number() OVER (ORDER BY f.score DESC, f.study_id))::integer,
           f.study_id,
           coalesce(f.distance, d.distance),
           1 - coalesce(f.distance, d.distance),
           s.modality, s.age, s.sex, s.view, s.flags, s.study_date, r.impression,
           d.image_pk, 'hybrid'::text, f.sources, f.score::double precision
    FROM fused f
    JOIN casebase.study s ON s.study_id = f.study_id
    LEFT JOIN casebase.report r ON r.study_pk = s.study_pk
    LEFT JOIN LATERAL (
        SELECT e.image_pk, (e.vec <=> q)::double precision AS distance
        FROM casebase.embedding e
        WHERE q IS NOT NULL AND e.space_id = sp.space_id AND e.modality = m
          AND e.study_pk = s.study_pk
        ORDER BY e.vec <=> q
        LIMIT 1
    ) d ON true
    ORDER BY f.score DESC, f.study_id;
END
$fn$;

REVOKE ALL ON FUNCTION casebase._space(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION casebase._leaf(casebase.embedding_space, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION casebase.similar_to_vector(vector, integer, text, text, double precision,
    double precision, text[], text, text, text[], text[], date, date, text[], text, jsonb,
    boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION casebase.similar_cases(text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean)
    FROM PUBLIC;
REVOKE ALL ON FUNCTION casebase.hybrid_search(vector, text, integer, text, text,
    double precision, double precision, text[], text, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.similar_to_vector(vector, integer, text, text,
    double precision, double precision, text[], text, text, text[], text[], date, date, text[],
    text, jsonb, boolean) TO casebase_analyst, casebase_ingest;
GRANT EXECUTE ON FUNCTION casebase.similar_cases(text, integer, text, text, double precision,
    double precision, text[], boolean, text, text[], text[], date, date, text[], jsonb, boolean)
    TO casebase_analyst, casebase_ingest;
GRANT EXECUTE ON FUNCTION casebase.hybrid_search(vector, text, integer, text, text,
    double precision, double precision, text[], text, text, integer, integer)
    TO casebase_analyst, casebase_ingest;
