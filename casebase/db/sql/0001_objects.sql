-- Views, functions and roles of the initial schema (revision 0001).
-- Tables are private; analysts read these views and call the search functions.

-- ---------------------------------------------------------------- partitions
-- Creating a space's partition and a modality's leaf is code, not a migration:
-- ingest calls this function; it is SECURITY DEFINER so the ingest role needs
-- no DDL rights, and serialised by an advisory lock so parallel shards agree.
CREATE FUNCTION casebase.ensure_embedding_partition(p_space smallint, p_modality text)
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

-- ---------------------------------------------------------------- views
CREATE VIEW casebase.studies AS
SELECT s.study_id, s.patient_key, s.modality, s.body_part, s.view, s.age, s.sex,
       s.study_date, s.flags, s.batch, s.attributes,
       r.findings, r.impression,
       (SELECT count(*) FROM casebase.image i WHERE i.study_pk = s.study_pk) AS n_images,
       s.created_at
FROM casebase.study s
LEFT JOIN casebase.report r USING (study_pk);

CREATE VIEW casebase.images AS
SELECT s.study_id, i.image_pk AS image_id, i.uri, i.sha256, i.size_bytes, i.width, i.height,
       i.view, i.flags, i.quality
FROM casebase.image i
JOIN casebase.study s USING (study_pk);

CREATE VIEW casebase.findings AS
SELECT s.study_id, f.finding, f.status, f.backend, f.version, f.evidence, f.location,
       s.modality
FROM casebase.finding f
JOIN casebase.study s USING (study_pk);

CREATE VIEW casebase.batches AS
SELECT b.name AS batch, b.source, b.status, sp.name AS space, b.stats,
       (SELECT count(*) FROM casebase.study s WHERE s.batch = b.name) AS n_studies,
       (SELECT count(*) FROM casebase.ingest_reject r WHERE r.batch = b.name) AS n_rejects,
       b.started_at, b.finished_at
FROM casebase.ingest_batch b
LEFT JOIN casebase.embedding_space sp USING (space_id);

CREATE VIEW casebase.rejects AS
SELECT batch, source, row_ref, study_id, reason, created_at
FROM casebase.ingest_reject;

CREATE VIEW casebase.spaces AS
SELECT name AS space, model_name, pretrained, checkpoint_sha256, dim, image_size, preprocess,
       fusion, is_default, created_at
FROM casebase.embedding_space;

CREATE VIEW casebase.embeddings AS
SELECT e.study_id, e.image_pk AS image_id, sp.name AS space, e.modality, e.vec
FROM casebase.embedding e
JOIN casebase.embedding_space sp USING (space_id);

-- ---------------------------------------------------------------- roles
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'casebase_analyst') THEN
        CREATE ROLE casebase_analyst NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'casebase_ingest') THEN
        CREATE ROLE casebase_ingest NOLOGIN;
    END IF;
END
$roles$;

REVOKE ALL ON ALL TABLES IN SCHEMA casebase FROM PUBLIC;
REVOKE ALL ON FUNCTION casebase.ensure_embedding_partition(smallint, text) FROM PUBLIC;

GRANT USAGE ON SCHEMA casebase TO casebase_analyst, casebase_ingest;
GRANT SELECT ON casebase.studies, casebase.images, casebase.findings, casebase.batches,
    casebase.rejects, casebase.spaces, casebase.embeddings TO casebase_analyst;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA casebase TO casebase_ingest;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA casebase TO casebase_ingest;
GRANT EXECUTE ON FUNCTION casebase.ensure_embedding_partition(smallint, text) TO casebase_ingest;
