"""Rollouts carried out by the service: spec, engine, windows, gates, budget, leases."""
