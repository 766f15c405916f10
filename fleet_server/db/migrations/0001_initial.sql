-- fleet-server's first schema: inventory, labels, tokens, audit.
-- Types that differ between SQLite and PostgreSQL are placeholders in braces (db/dialects.py).

-- One counter for every change of the inventory. A writer increments it first, inside its
-- transaction: the row lock makes writers commit in counter order, so a reader polling
-- "seq > last" never skips a change that commits late (inventory/cache.py).
CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY,
    seq {bigint} NOT NULL
);
INSERT INTO change_counter (id, seq) VALUES (1, 0);

CREATE TABLE cars (
    vin TEXT PRIMARY KEY,
    seq {bigint} NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    online_since {real},
    connector_version TEXT,
    presence TEXT,
    reported_labels TEXT NOT NULL DEFAULT '{{}}',
    drift TEXT,
    last_outcome TEXT,
    last_seen {real},
    presence_at {real}
);
CREATE INDEX cars_seq ON cars (seq);

-- One row per workload and per agent, not a document per car: with several servers each
-- gets only part of a car's messages, and each must change only what it received.
CREATE TABLE car_workloads (
    vin TEXT NOT NULL,
    name TEXT NOT NULL,
    agent TEXT,
    state TEXT,
    substate TEXT,
    info TEXT,
    instance_id TEXT,
    since TEXT,
    PRIMARY KEY (vin, name)
);

CREATE TABLE car_agents (
    vin TEXT NOT NULL,
    name TEXT NOT NULL,
    connected INTEGER,
    cpu_usage {real},
    free_memory {bigint},
    since TEXT,
    PRIMARY KEY (vin, name)
);

-- Labels set through the API (the car's own are cars.reported_labels); these win.
CREATE TABLE car_labels (
    vin TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (vin, key)
);

CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- Append-only and hash-chained (audit/chain.py); audit_head holds the count and the last
-- hash, updated in the same transaction, so a removed tail is noticed too.
CREATE TABLE audit_log (
    seq {bigint} PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    vins TEXT NOT NULL,
    request_ids TEXT NOT NULL,
    key_id TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE audit_vins (
    vin TEXT NOT NULL,
    seq {bigint} NOT NULL,
    PRIMARY KEY (vin, seq)
);

CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY,
    count {bigint} NOT NULL,
    last_hash TEXT NOT NULL
);
INSERT INTO audit_head (id, count, last_hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')
