-- Prompts embedded by a space's text tower (revision 0009), for composed queries in SQL:
-- casebase.similar_cases_modified looks its modify and neutral prompts up here, and an
-- analyst can pass these vectors to casebase.similar_composed. Written by `casebase
-- prompts add` (Client.embed_prompts): SQL cannot run a text tower.
CREATE OR REPLACE VIEW casebase.prompts AS
SELECT sp.name AS space, p.prompt, p.vec, p.created_at
FROM casebase.prompt_embedding p
JOIN casebase.embedding_space sp USING (space_id);

-- Analysts read the view; ingest holds on it what it holds on the other views.
GRANT SELECT ON casebase.prompts TO casebase_analyst;
GRANT SELECT, INSERT, UPDATE, DELETE ON casebase.prompts TO casebase_ingest;
