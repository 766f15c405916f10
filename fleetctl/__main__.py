"""Entry point (placeholder until fleetctl is built)."""


def main() -> int:
    return 0
