-- Browser sessions of the dashboard (fleet_server/web/sessions.py): a token entered once
-- on the login page becomes a session cookie. Only the session id's SHA-256 is stored;
-- the session holds the token's hash, so revoking the token ends its sessions too.
CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at {real} NOT NULL,
    expires_at {real} NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at)
