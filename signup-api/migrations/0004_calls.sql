-- Calls (issue 15): one row per call, and one row per person in it. The caller's own row
-- is `accepted` from the start; each callee's starts `ringing` and ends `accepted`,
-- `declined`, `busy`, `no_answer`, `cancelled`, or `ended` (left after answering). Every
-- change is a conditional UPDATE from the state it leaves, so an answer, a cancel and the
-- ring timeout (swept by every replica) can race and only one of them wins.
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    caller_id TEXT NOT NULL REFERENCES accounts(id),
    created_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_created ON calls(created_ms);
CREATE TABLE IF NOT EXISTS call_members (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES accounts(id),
    invited_by TEXT REFERENCES accounts(id),
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    ring_until_ms BIGINT NOT NULL,
    answered_ms BIGINT,
    ended_ms BIGINT
);
CREATE INDEX IF NOT EXISTS call_members_call ON call_members(call_id, user_id);
CREATE INDEX IF NOT EXISTS call_members_user ON call_members(user_id, created_ms);
CREATE INDEX IF NOT EXISTS call_members_inviter ON call_members(invited_by, created_ms);
CREATE INDEX IF NOT EXISTS call_members_ringing ON call_members(ring_until_ms) WHERE state = 'ringing';
