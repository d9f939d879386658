-- Takes a tick in one round trip instead of four (BEGIN, lock, insert, COMMIT): change-stream
-- readers call it whenever the batch they wait for has not been cut yet, and it notifies
-- `datastore_change_ticks` of each new tick.
--
-- Returns the latest tick after the call: a new one when committed changes are not covered by
-- the latest tick (or always, with `force`), else the latest. The advisory lock (key: TICK_LOCK
-- in changes.rs) serialises takers; the function is VOLATILE, so each statement after the lock
-- runs with a new snapshot, taken after the lock: ticks are ordered like their snapshots. A
-- reader that waited for the lock while another took a tick reads that tick instead of taking
-- one more: concurrent readers share one tick (fewer, larger batches) instead of queueing
-- one each. `force` (a position "now") always takes its own, so that its snapshot is later than
-- the call.
-- The highest change sequence a tick's snapshot sees: no change of batch k has a higher one, so
-- reads that continue a large batch can bound their index walk (NULL on older ticks).
ALTER TABLE datastore_change_ticks ADD COLUMN last_seq bigint;

CREATE FUNCTION datastore_take_tick(force boolean) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    latest  bigint;
    newer   bigint;
    taken   bigint;
    pending boolean;
BEGIN
    -- Ticks rely on each statement after the lock seeing a new snapshot.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'datastore_take_tick needs READ COMMITTED, the session uses %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF NOT force THEN
        -- Idle polls stop here, without taking the lock.
        SELECT t.tick, EXISTS (SELECT 1 FROM datastore_changes c
                 WHERE c.xid >= pg_snapshot_xmin(t.snapshot) AND NOT pg_visible_in_snapshot(c.xid, t.snapshot))
          INTO latest, pending
          FROM datastore_change_ticks t WHERE t.tick = (SELECT max(tick) FROM datastore_change_ticks);
        IF latest IS NULL OR NOT pending THEN
            RETURN latest;
        END IF;
    END IF;
    PERFORM pg_advisory_xact_lock(7959676244968275970);
    IF NOT force THEN
        SELECT max(tick) INTO newer FROM datastore_change_ticks;
        IF newer > latest THEN
            RETURN newer;
        END IF;
    END IF;
    WITH newest AS (SELECT * FROM datastore_change_ticks
           WHERE tick = (SELECT max(tick) FROM datastore_change_ticks)),
         new_tick AS (INSERT INTO datastore_change_ticks (tick, snapshot, created_at, last_seq)
           SELECT t.tick + 1, pg_current_snapshot(), clock_timestamp(),
                  (SELECT max(seq) FROM datastore_changes) FROM newest t
           WHERE force OR EXISTS (SELECT 1 FROM datastore_changes c
                WHERE c.xid >= pg_snapshot_xmin(t.snapshot) AND NOT pg_visible_in_snapshot(c.xid, t.snapshot))
           RETURNING tick)
    SELECT (SELECT tick FROM new_tick), (SELECT tick FROM newest) INTO taken, latest;
    IF taken IS NULL THEN
        RETURN latest;
    END IF;
    -- Wakes the readers of every store (src/wakeup.rs), delivered at commit. One per tick, never
    -- one per write; the payload moves no position.
    PERFORM pg_notify('datastore_change_ticks', taken::text);
    RETURN taken;
END
$$;
