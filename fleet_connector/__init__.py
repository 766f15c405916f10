"""Eclipse Ankaios fleet connector: manage a vehicle's workloads from the cloud over MQTT."""

from fleet_connector.config import Config
from fleet_connector.connector import Connector

__all__ = ["Config", "Connector"]
