-- Every flag_mask value a row can have and pass a filter (revision 0010): the masks that
-- hold every required flag casebase knows and none of the excluded ones
-- (casebase._flag_mask). NULL when the filter names none of those flags: then the mask
-- constrains nothing. casebase._filter adds "e.flag_mask = ANY (this)" to its predicate
-- beside the array conditions, which stay the contract: the mask only lets the covering
-- index skip rows that the array conditions would drop anyway. IMMUTABLE, so the planner
-- folds it to a constant array, an index condition.
CREATE OR REPLACE FUNCTION casebase._flag_masks(require_flags text[], exclude_flags text[])
RETURNS smallint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
    SELECT CASE WHEN r = 0 AND x = 0 THEN NULL ELSE ARRAY(
        SELECT m::smallint FROM generate_series(0, 127) m
        WHERE m & r = r AND m & x = 0 ORDER BY m) END
    FROM (SELECT casebase._flag_mask(coalesce(require_flags, '{}')) AS r,
                 casebase._flag_mask(coalesce(exclude_flags, '{}')) AS x) b
$fn$;

ALTER FUNCTION casebase._flag_masks(text[], text[]) OWNER TO casebase_owner;
