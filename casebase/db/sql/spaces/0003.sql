-- Revision 0003: login users of both groups resolve spaces through this view (they
-- have no table rights), so it carries space_id and checkpoint_path too.
CREATE OR REPLACE VIEW casebase.spaces AS
SELECT name AS space, model_name, pretrained, checkpoint_sha256, dim, image_size, preprocess,
       fusion, is_default, created_at, space_id, checkpoint_path
FROM casebase.embedding_space;

-- Analysts read the view. Ingest holds on it what revision 0001's grant ON ALL TABLES
-- gave it (that grant covers views), so a re-created view is privileged like a fresh one.
GRANT SELECT ON casebase.spaces TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.spaces TO casebase_ingest;
