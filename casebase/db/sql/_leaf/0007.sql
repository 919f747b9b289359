-- The modality whose leaf partition a search reads, checked against the leaves the
-- space holds. Revision 0007: owned by casebase_owner, pg_temp last in the search path,
-- and the catalogs named with their schema (a temp table pg_inherits shadowed them).
CREATE OR REPLACE FUNCTION casebase._leaf(sp casebase.embedding_space, p_modality text)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    leaves text[];
    m text := p_modality;
BEGIN
    SELECT array_agg(split_part(pg_catalog.pg_get_expr(c.relpartbound, c.oid), '''', 2)
                     ORDER BY c.relname)
    INTO leaves
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
    WHERE p.relnamespace = 'casebase'::regnamespace
      AND p.relname = format('embedding_s%s', sp.space_id);
    IF m IS NULL THEN
        IF cardinality(leaves) = 1 THEN
            m := leaves[1];
        ELSE
            RAISE EXCEPTION 'modality is required: space % holds %', sp.name,
                coalesce(array_to_string(leaves, ', '), 'no studies') USING ERRCODE = '22023';
        END IF;
    END IF;
    IF leaves IS NULL OR NOT m = ANY (leaves) THEN
        RAISE EXCEPTION 'no % studies in space % (it holds %)', quote_literal(m), sp.name,
            coalesce(array_to_string(leaves, ', '), 'none') USING ERRCODE = '22023';
    END IF;
    RETURN m;
END
$fn$;

ALTER FUNCTION casebase._leaf(casebase.embedding_space, text) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase._leaf(casebase.embedding_space, text) FROM PUBLIC;
