-- The embedding space a search names, or the default one. Revision 0007: owned by
-- casebase_owner, pg_temp last in the search path (an analyst's temp table cannot
-- shadow casebase's).
CREATE OR REPLACE FUNCTION casebase._space(p_space text)
RETURNS casebase.embedding_space
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
DECLARE
    sp casebase.embedding_space;
    n integer;
BEGIN
    IF p_space IS NOT NULL THEN
        SELECT * INTO sp FROM casebase.embedding_space WHERE name = p_space;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown embedding space %', quote_literal(p_space)
                USING ERRCODE = '22023';
        END IF;
        RETURN sp;
    END IF;
    SELECT * INTO sp FROM casebase.embedding_space WHERE is_default;
    IF FOUND THEN
        RETURN sp;
    END IF;
    SELECT count(*) INTO n FROM casebase.embedding_space;
    IF n = 1 THEN
        SELECT * INTO sp FROM casebase.embedding_space;
        RETURN sp;
    END IF;
    RAISE EXCEPTION 'no default embedding space (% exist): pass space => ...', n
        USING ERRCODE = '22023';
END
$fn$;

ALTER FUNCTION casebase._space(text) OWNER TO casebase_owner;
REVOKE ALL ON FUNCTION casebase._space(text) FROM PUBLIC;
