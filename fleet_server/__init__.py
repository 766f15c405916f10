"""fleet-server: the fleet as a shared service (inventory, labels, API, roles, audit, metrics)."""
