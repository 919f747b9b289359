-- The vectors, named by study, image and space (revision 0001).
CREATE OR REPLACE VIEW casebase.embeddings AS
SELECT e.study_id, e.image_pk AS image_id, sp.name AS space, e.modality, e.vec
FROM casebase.embedding e
JOIN casebase.embedding_space sp USING (space_id);

-- Analysts read the view. Ingest holds on it what revision 0001's grant ON ALL TABLES
-- gave it (that grant covers views), so a re-created view is privileged like a fresh one.
GRANT SELECT ON casebase.embeddings TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.embeddings TO casebase_ingest;
