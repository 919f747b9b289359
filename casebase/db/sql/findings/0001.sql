-- The extracted findings of each study, for analysts (revision 0001).
CREATE OR REPLACE VIEW casebase.findings AS
SELECT s.study_id, f.finding, f.status, f.backend, f.version, f.evidence, f.location,
       s.modality
FROM casebase.finding f
JOIN casebase.study s USING (study_pk);

-- Analysts read the view. Ingest holds on it what revision 0001's grant ON ALL TABLES
-- gave it (that grant covers views), so a re-created view is privileged like a fresh one.
GRANT SELECT ON casebase.findings TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.findings TO casebase_ingest;
