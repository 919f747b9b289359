-- Revision 0003: what login users of the two groups need to use the client and CLI.
-- Both check the schema revision before working, and resolve spaces through a view.
GRANT SELECT ON public.alembic_version TO casebase_analyst, casebase_ingest;

CREATE OR REPLACE VIEW casebase.spaces AS
SELECT name AS space, model_name, pretrained, checkpoint_sha256, dim, image_size, preprocess,
       fusion, is_default, created_at, space_id, checkpoint_path
FROM casebase.embedding_space;
