-- When each consumer's checkpoint was last written or reset (updated_at also moves with every
-- lease renewal), for consumer admin.
ALTER TABLE datastore_consumers ADD COLUMN checkpointed_at timestamptz;
UPDATE datastore_consumers SET checkpointed_at = updated_at WHERE token IS NOT NULL;
