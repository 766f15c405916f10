"""The baseline: a connector that works the way the tutorial's reference connector does.

``python -m bench.tutorial_connector`` with the tutorial's environment (``VIN``,
``MQTT_BROKER_ADDR``, ``MQTT_BROKER_PORT``) plus ``ANKAIOS_CONTROL_INTERFACE_PATH`` for the
FIFOs. Same structure as the tutorial's code: the unmodified ankaios-sdk 1.0.1 ``Ankaios``
opened once, its ``apply_manifest``/``delete_manifest``/``get_state`` called from paho's
``on_message`` (no queue, no worker), the reply published from the callback at paho's
defaults (MQTT 3.1.1, QoS 0, no TCP_NODELAY), one INFO line per message. Written for the
benchmark from the tutorial's description; the only additions are the FIFO path (the SDK
reads a class attribute for it) and a clean exit on SIGTERM.

``--qos 1`` makes the same connector subscribe and reply at QoS 1 (still MQTT 3.1.1, paho's
automatic acknowledgement after ``on_message`` returns, so after the reply is queued):
the tutorial's loop at the connector's delivery level, which separates the price of QoS 1
from the connector's own work (issue #23).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Any

import paho.mqtt.client as mqtt
from ankaios_sdk import Ankaios, ControlInterface, Manifest
from paho.mqtt.enums import CallbackAPIVersion

logger = logging.getLogger("fleetconnector")


def main(argv: list[str]) -> int:
    qos = int(argv[argv.index("--qos") + 1]) if "--qos" in argv else 0
    handler = logging.StreamHandler(stream=sys.stdout)
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    broker = os.environ.get("MQTT_BROKER_ADDR", "localhost")
    port = int(os.environ.get("MQTT_BROKER_PORT", "1883"))
    base_topic = f"vehicle/{os.environ['VIN']}"
    path = os.environ.get("ANKAIOS_CONTROL_INTERFACE_PATH")
    if path:
        ControlInterface.ANKAIOS_CONTROL_INTERFACE_BASE_PATH = path

    with Ankaios() as ankaios:

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, p: Any) -> None:
            client.subscribe(f"{base_topic}/manifest/apply/req", qos)
            client.subscribe(f"{base_topic}/manifest/delete/req", qos)
            client.subscribe(f"{base_topic}/state/req", qos)

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            try:
                logger.info(
                    f"Received message on topic {msg.topic} with payload {msg.payload.decode()}"
                )
                if msg.topic == f"{base_topic}/manifest/apply/req":
                    manifest = Manifest.from_string(str(msg.payload.decode()))
                    ret = ankaios.apply_manifest(manifest)
                    if ret is not None:
                        client.publish(
                            f"{base_topic}/manifest/apply/resp", json.dumps(ret.to_dict()), qos
                        )
                elif msg.topic == f"{base_topic}/manifest/delete/req":
                    manifest = Manifest.from_string(str(msg.payload.decode()))
                    ret = ankaios.delete_manifest(manifest)
                    if ret is not None:
                        client.publish(
                            f"{base_topic}/manifest/delete/resp", json.dumps(ret.to_dict()), qos
                        )
                elif msg.topic == f"{base_topic}/state/req":
                    state = ankaios.get_state(field_masks=json.loads(str(msg.payload.decode())))
                    client.publish(f"{base_topic}/state/resp", json.dumps(state.to_dict()), qos)
            except Exception as e:
                logger.error(f"Error processing message: {e}")

        mqtt_client = mqtt.Client(CallbackAPIVersion.VERSION2)
        mqtt_client.on_connect = on_connect
        mqtt_client.on_message = on_message
        # SIGTERM ends loop_forever the way Ctrl-C would end the tutorial's script.
        signal.signal(signal.SIGTERM, lambda s, f: mqtt_client.disconnect())
        mqtt_client.connect(broker, port, 60)
        mqtt_client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
