-- Rollouts run by the service (fleet_server/rollouts/). Times are Unix seconds.

CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    name TEXT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    stage INTEGER NOT NULL DEFAULT 0,
    waiting TEXT,
    approvals TEXT NOT NULL DEFAULT '[]',
    created_by TEXT NOT NULL,
    created_at {real} NOT NULL,
    updated_at {real} NOT NULL,
    finished_at {real},
    first_sent_at {real},
    sent_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX rollouts_state ON rollouts (state);

-- One row per car of a rollout. request_id is fixed per car and attempt before anything is
-- sent, so whichever instance sends (again) uses the same id and the car's journal
-- answers a repeat instead of carrying it out twice; payload is the signed request of that
-- attempt (with --sign-key), sent again byte for byte, since the car's journal knows a
-- request by its id and its bytes.
CREATE TABLE rollout_cars (
    rollout_id TEXT NOT NULL,
    vin TEXT NOT NULL,
    wave INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    payload TEXT,
    joined_late INTEGER NOT NULL DEFAULT 0,
    waiting TEXT,
    kind TEXT,
    code TEXT,
    message TEXT,
    detail TEXT,
    sent_at {real},
    finished_at {real},
    PRIMARY KEY (rollout_id, vin)
);

-- Who carries out a rollout: one instance, until expires_at; renewed by its owner, taken
-- over by another instance once it has expired.
CREATE TABLE rollout_leases (
    rollout_id TEXT PRIMARY KEY,
    owner TEXT,
    expires_at {real} NOT NULL,
    takeovers INTEGER NOT NULL DEFAULT 0
);

-- Signature counters per signing key, shared by the instances: a car accepts a counter
-- from a key once, so every signature takes the next one (never below the time in
-- microseconds, so a database restored from a backup cannot go back).
CREATE TABLE signing_counters (
    key_id TEXT PRIMARY KEY,
    counter {bigint} NOT NULL
)
