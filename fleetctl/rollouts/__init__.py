"""Rollouts as data: a YAML file describes them, a SQLite database records every car."""
