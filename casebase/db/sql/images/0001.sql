-- The images of each study, for analysts (revision 0001).
CREATE OR REPLACE VIEW casebase.images AS
SELECT s.study_id, i.image_pk AS image_id, i.uri, i.sha256, i.size_bytes, i.width, i.height,
       i.view, i.flags, i.quality
FROM casebase.image i
JOIN casebase.study s USING (study_pk);

-- Analysts read the view. Ingest holds on it what revision 0001's grant ON ALL TABLES
-- gave it (that grant covers views), so a re-created view is privileged like a fresh one.
GRANT SELECT ON casebase.images TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.images TO casebase_ingest;
