-- Ingest batches with their study and reject counts, and why a failed one stopped
-- (the revision that added ingest_batch.error: + error).
CREATE OR REPLACE VIEW casebase.batches AS
SELECT b.name AS batch, b.source, b.status, sp.name AS space, b.stats,
       (SELECT count(*) FROM casebase.study s WHERE s.batch = b.name) AS n_studies,
       (SELECT count(*) FROM casebase.ingest_reject r WHERE r.batch = b.name) AS n_rejects,
       b.started_at, b.finished_at, b.error
FROM casebase.ingest_batch b
LEFT JOIN casebase.embedding_space sp USING (space_id);

-- Analysts read the view. Ingest holds on it what revision 0001's grant ON ALL TABLES
-- gave it (that grant covers views), so a re-created view is privileged like a fresh one.
GRANT SELECT ON casebase.batches TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.batches TO casebase_ingest;
