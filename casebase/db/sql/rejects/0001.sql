-- Rows an ingest batch rejected, with the reason (revision 0001).
CREATE OR REPLACE VIEW casebase.rejects AS
SELECT batch, source, row_ref, study_id, reason, created_at
FROM casebase.ingest_reject;

-- Analysts read the view. Ingest holds on it what revision 0001's grant ON ALL TABLES
-- gave it (that grant covers views), so a re-created view is privileged like a fresh one.
GRANT SELECT ON casebase.rejects TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.rejects TO casebase_ingest;
