-- Creating a space's partition and a modality's leaf is code, not a migration:
-- ingest calls this function; it is SECURITY DEFINER so the ingest role needs
-- no DDL rights, and serialised by an advisory lock so parallel shards agree.
CREATE OR REPLACE FUNCTION casebase.ensure_embedding_partition(p_space smallint, p_modality text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, casebase, public
AS $fn$
DECLARE
    space_table text := format('embedding_s%s', p_space);
    leaf text := format('embedding_s%s_%s', p_space, lower(p_modality));
    d integer;
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
        EXECUTE format(
            'CREATE INDEX %I ON casebase.%I USING hnsw ((vec::vector(%s)) vector_cosine_ops) '
            'WITH (m = 16, ef_construction = 64)', leaf || '_hnsw', leaf, d);
        EXECUTE format('CREATE INDEX %I ON casebase.%I (sex, age)', leaf || '_sex_age', leaf);
        EXECUTE format('CREATE INDEX %I ON casebase.%I (age)', leaf || '_age', leaf);
        EXECUTE format('CREATE INDEX %I ON casebase.%I (study_date)', leaf || '_date', leaf);
        EXECUTE format('CREATE INDEX %I ON casebase.%I (study_pk)', leaf || '_study', leaf);
        EXECUTE format('CREATE INDEX %I ON casebase.%I USING gin (flags)', leaf || '_flags', leaf);
    END IF;
    RETURN leaf;
END
$fn$;

REVOKE ALL ON FUNCTION casebase.ensure_embedding_partition(smallint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION casebase.ensure_embedding_partition(smallint, text) TO casebase_ingest;
