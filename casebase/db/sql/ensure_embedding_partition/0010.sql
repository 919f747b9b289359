-- Revision 0007: owned by casebase_owner (which owns casebase.embedding and its
-- partitions, so it may add partitions to them), pg_temp last in the search path.
-- Leaves it creates belong to casebase_owner; ingest writes through the parent table.
-- Revision 0010: the covering index carries the half-precision copy of the vector
-- (vec_half), so the exact route ranks the passing rows without visiting the table, and
-- on PostgreSQL 18 it leads with the columns a filter names by equality (sex, the flag
-- mask, view; 18 skips over the ones a filter leaves out), then age. Before 18 (no skip
-- scan) it leads with (sex, age), as in 0006.
CREATE OR REPLACE FUNCTION casebase.ensure_embedding_partition(p_space smallint, p_modality text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    space_table text := format('embedding_s%s', p_space);
    leaf text := format('embedding_s%s_%s', p_space, lower(p_modality));
    d integer;
    hnsw_m integer;
    hnsw_efc integer;
BEGIN
    IF p_modality IS NULL OR p_modality !~ '^[A-Z][A-Z0-9]{0,15}$' THEN
        RAISE EXCEPTION 'invalid modality %', p_modality USING ERRCODE = '22023';
    END IF;
    SELECT dim INTO d FROM casebase.embedding_space WHERE space_id = p_space;
    IF d IS NULL THEN
        RAISE EXCEPTION 'unknown embedding space %', p_space USING ERRCODE = '22023';
    END IF;
    IF to_regclass(format('casebase.%I', leaf)) IS NOT NULL THEN
        RETURN leaf;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('casebase.embedding_partition'));
    IF to_regclass(format('casebase.%I', space_table)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE casebase.%I PARTITION OF casebase.embedding '
            'FOR VALUES IN (%s) PARTITION BY LIST (modality)', space_table, p_space);
    END IF;
    IF to_regclass(format('casebase.%I', leaf)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE casebase.%I PARTITION OF casebase.%I FOR VALUES IN (%L)',
            leaf, space_table, p_modality);
        -- Vectors stay inline: no TOAST detour on every distance computation.
        EXECUTE format('ALTER TABLE casebase.%I ALTER COLUMN vec SET STORAGE PLAIN', leaf);
        EXECUTE format(
            'ALTER TABLE casebase.%I ADD CONSTRAINT %I CHECK (vector_dims(vec) = %s)',
            leaf, leaf || '_dim', d);
        SELECT value::integer INTO hnsw_m FROM casebase.setting WHERE key = 'hnsw_m';
        SELECT value::integer INTO hnsw_efc FROM casebase.setting WHERE key = 'hnsw_ef_construction';
        EXECUTE format(
            'CREATE INDEX %I ON casebase.%I USING hnsw ((vec::vector(%s)) vector_cosine_ops) '
            'WITH (m = %s, ef_construction = %s)', leaf || '_hnsw', leaf, d,
            coalesce(hnsw_m, 16), coalesce(hnsw_efc, 64));
        -- Every filter column and vec_half, so the exact route is an index-only scan.
        EXECUTE format('CREATE INDEX %I ON casebase.%I %s', leaf || '_cover', leaf,
            CASE WHEN current_setting('server_version_num')::integer >= 180000
                THEN '(sex, flag_mask, view, age) INCLUDE (flags, study_date, batch, '
                     'patient_key, study_id, study_pk, image_pk, vec_half)'
                ELSE '(sex, age) INCLUDE (flag_mask, view, flags, study_date, batch, '
                     'patient_key, study_id, study_pk, image_pk, vec_half)' END);
        EXECUTE format('CREATE INDEX %I ON casebase.%I (age)', leaf || '_age', leaf);
        EXECUTE format('CREATE INDEX %I ON casebase.%I (study_date)', leaf || '_date', leaf);
        EXECUTE format('CREATE INDEX %I ON casebase.%I (study_pk)', leaf || '_study', leaf);
        EXECUTE format('CREATE INDEX %I ON casebase.%I USING gin (flags)', leaf || '_flags', leaf);
    END IF;
    RETURN leaf;
END
$fn$;

ALTER FUNCTION casebase.ensure_embedding_partition(smallint, text) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase.ensure_embedding_partition(smallint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.ensure_embedding_partition(smallint, text) TO casebase_ingest;
