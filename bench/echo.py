"""A bare MQTT echo: the floor under the connector's round trip on the same broker.

``python -m bench.echo PORT [PROTOCOL [QOS]]``: subscribes ``echo/+/req/+`` (QoS 1) and
answers each request on ``echo/<x>/resp/<id>`` from paho's callback, acknowledging it after
the reply as the connector does (manual ack). Same client setup as the connector
(TCP_NODELAY). With QOS 0 (and PROTOCOL 3.1.1) it subscribes and answers at QoS 0, as the
tutorial's connector does: the difference is what delivery guarantees cost on the wire.
Prints ``ready`` once subscribed; runs until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt

from fleet_connector.mqtt.broker import BrokerSettings


def main() -> int:
    port = int(sys.argv[1])
    protocol = sys.argv[2] if len(sys.argv) > 2 else "5"
    qos = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    settings = BrokerSettings(host="127.0.0.1", port=port, protocol=protocol)
    client = settings.make_client(f"bench-echo-{qos}")
    client.manual_ack_set(qos > 0)
    subscribed = threading.Event()

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        c.subscribe(f"echo/q{qos}/req/+", qos)

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        c.publish(msg.topic.replace("/req/", "/resp/", 1), msg.payload, qos=qos)
        if qos:
            c.ack(msg.mid, msg.qos)

    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    stop.wait()
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
