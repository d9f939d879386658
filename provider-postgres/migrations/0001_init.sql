-- Documents live in `document` (JSONB, canonical shape without _id/createdAt);
-- `id` and `created_at` are columns so that the one server clock and keyset pagination are indexed.

CREATE TABLE health_events (
    id              text COLLATE "C" PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
    idempotency_key text COLLATE "C" UNIQUE,
    document        jsonb NOT NULL
);
-- Keyset pagination, "latest" queries and createdAt ranges.
CREATE INDEX health_events_created_at_id ON health_events (created_at, id);
-- Equality filters (`document @? '$.a.b ? (@ == v)'`) on any path.
CREATE INDEX health_events_document ON health_events USING gin (document jsonb_path_ops);

CREATE TABLE maintenance_events (
    id              text COLLATE "C" PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
    idempotency_key text COLLATE "C" UNIQUE,
    document        jsonb NOT NULL
);
CREATE INDEX maintenance_events_created_at_id ON maintenance_events (created_at, id);
CREATE INDEX maintenance_events_document ON maintenance_events USING gin (document jsonb_path_ops);
-- eventId is the business key of maintenance events (upserts rely on it).
CREATE UNIQUE INDEX maintenance_events_event_id ON maintenance_events ((document ->> 'eventId'));
