"""The REST API under /api/v1, its OpenAPI document, health and metrics endpoints."""
