-- Purges find what expired through an index instead of scanning whole tables.
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions(expires_at);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys(created_at);
-- A room lives until expires_at, pushed back when it is used; 0 marks rooms made before
-- this migration, which get a full lifetime from the first purge that sees them.
ALTER TABLE rooms ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS rooms_expires_at ON rooms(expires_at);
CREATE INDEX IF NOT EXISTS rooms_created_by ON rooms(created_by, expires_at);
