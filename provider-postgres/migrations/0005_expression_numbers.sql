-- The value an aggregation `$expr` reads at `path`, as a number that orders against any number
-- exactly as BSON type order does (Filter::ExprCmp): the number itself; -Infinity for missing
-- and null (they sort before numbers); +Infinity for strings, documents, arrays (also an array
-- met on the way: "$a.b" over an array `a` is an array), booleans and dates (after numbers).
CREATE FUNCTION datastore_expr_number(doc jsonb, path text[]) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    v jsonb := doc;
    k text;
BEGIN
    FOREACH k IN ARRAY path LOOP
        CASE jsonb_typeof(v)
            WHEN 'array' THEN RETURN 'Infinity';
            WHEN 'object' THEN
                -- A date ({"$date": ...}) is a value, not a document to walk into.
                IF v ? '$date' THEN RETURN '-Infinity'; END IF;
                v := v -> k;
                IF v IS NULL THEN RETURN '-Infinity'; END IF;
            ELSE RETURN '-Infinity';
        END CASE;
    END LOOP;
    RETURN CASE jsonb_typeof(v)
        WHEN 'number' THEN v::numeric
        WHEN 'null' THEN '-Infinity'::numeric
        ELSE 'Infinity'::numeric
    END;
END
$$;

-- The health-events-analyzer's rules bound every candidate set by a time window on the event's
-- generated timestamp; with the node name (the GIN index) this answers them from two indexes.
CREATE INDEX health_events_generated_seconds ON health_events
    (datastore_expr_number(document, '{healthevent,generatedtimestamp,seconds}'::text[]));
