-- Change capture for change streams. Providers write one row per changed document in the same
-- transaction as the change (no trigger: the provider knows the updated paths).
CREATE TABLE datastore_changes (
    seq            bigserial PRIMARY KEY,
    xid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    collection     text NOT NULL,
    operation      "char" NOT NULL,             -- i(nsert), u(pdate), r(eplace), d(elete)
    document_id    text COLLATE "C" NOT NULL,
    created_at     timestamptz NOT NULL,        -- the document's createdAt
    full_document  jsonb,                       -- body right after the change; NULL for deletes
    updated_fields text[],
    removed_fields text[],
    changed_at     timestamptz NOT NULL DEFAULT now()  -- transaction time, for lag ages
);
-- Batches are read by transaction id range (see the README: snapshot ticks).
CREATE INDEX datastore_changes_xid ON datastore_changes (xid);

-- Ticks: numbered snapshots. Batch k holds the changes of the transactions visible in tick k's
-- snapshot and not in tick k-1's, so a transaction that commits late lands in a later batch
-- instead of behind a reader's position.
CREATE TABLE datastore_change_ticks (
    tick       bigint PRIMARY KEY,
    snapshot   pg_snapshot NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO datastore_change_ticks (tick, snapshot) VALUES (0, pg_current_snapshot());

-- Each consumer's checkpoint and read lease, per collection. One process at a time holds the
-- lease of a consumer; only the holder reads and checkpoints.
CREATE TABLE datastore_consumers (
    consumer    text NOT NULL,
    collection  text NOT NULL,
    token       text,
    lease_owner text,
    lease_until timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, collection)
);
