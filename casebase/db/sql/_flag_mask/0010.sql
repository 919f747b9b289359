-- The quality flags casebase itself raises, as bits (revision 0010): the generated column
-- casebase.embedding.flag_mask stores this of every row, and it is a key column of the
-- covering index of each leaf, so a filter on these flags narrows the index scan instead
-- of being checked row by row (casebase._flag_masks turns a filter into the masks that
-- pass it). Other flags are 0 here and filtered by the array predicate alone.
-- The bit of each flag is fixed: stored masks depend on it. A new flag needs a new
-- revision that also rewrites the column.
CREATE OR REPLACE FUNCTION casebase._flag_mask(flags text[])
RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, casebase, public, pg_temp
AS $fn$
    SELECT (CASE WHEN flags @> '{portable}'::text[] THEN 1 ELSE 0 END
          | CASE WHEN flags @> '{supine}'::text[] THEN 2 ELSE 0 END
          | CASE WHEN flags @> '{underexposed}'::text[] THEN 4 ELSE 0 END
          | CASE WHEN flags @> '{overexposed}'::text[] THEN 8 ELSE 0 END
          | CASE WHEN flags @> '{low_contrast}'::text[] THEN 16 ELSE 0 END
          | CASE WHEN flags @> '{low_resolution}'::text[] THEN 32 ELSE 0 END
          | CASE WHEN flags @> '{burned_in_text}'::text[] THEN 64 ELSE 0 END)::smallint
$fn$;

ALTER FUNCTION casebase._flag_mask(text[]) OWNER TO casebase_owner;
