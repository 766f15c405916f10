-- The servers sharing this database, each with a heartbeat (peers.py): when one stops
-- beating, the others read the retained topics again, so what it had received but not yet
-- written is not lost.
CREATE TABLE server_instances (
    instance TEXT PRIMARY KEY,
    started_at {real} NOT NULL,
    heartbeat {real} NOT NULL
)
