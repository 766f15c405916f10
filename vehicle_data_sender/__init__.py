"""A sample vehicle data sender: publishes a simulated speed to MQTT on a fixed schedule.

The Ankaios fleet-management tutorial deploys it remotely through the fleet connector; this
is a sturdier take on the tutorial's reference sender (same topic, payload and defaults).
Run it with ``vehicle-data-sender --help`` or ``python -m vehicle_data_sender --help``.
"""

from vehicle_data_sender.config import Config, ConfigError
from vehicle_data_sender.sender import Sender
from vehicle_data_sender.wave import TriangleWave

__all__ = ["Config", "ConfigError", "Sender", "TriangleWave"]
