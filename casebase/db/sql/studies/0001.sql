-- One row per study with its sanitised report, for analysts (revision 0001).
CREATE OR REPLACE VIEW casebase.studies AS
SELECT s.study_id, s.patient_key, s.modality, s.body_part, s.view, s.age, s.sex,
       s.study_date, s.flags, s.batch, s.attributes,
       r.findings, r.impression,
       (SELECT count(*) FROM casebase.image i WHERE i.study_pk = s.study_pk) AS n_images,
       s.created_at
FROM casebase.study s
LEFT JOIN casebase.report r USING (study_pk);

-- Analysts read the view. Ingest holds on it what revision 0001's grant ON ALL TABLES
-- gave it (that grant covers views), so a re-created view is privileged like a fresh one.
GRANT SELECT ON casebase.studies TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.studies TO casebase_ingest;
