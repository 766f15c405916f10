"""The connector's MQTT side: the broker session, its topics, and what rides on it.

* :mod:`~fleet_connector.mqtt.link`: ``MqttLink``, the session driven by the connector's
  loop (subscriptions, incoming requests, replies, presence);
* :mod:`~fleet_connector.mqtt.broker`: ``BrokerSettings``, how to reach the broker (shared
  with the vehicle data sender and fleetctl);
* :mod:`~fleet_connector.mqtt.topics`: ``Topics`` and ``Operation``, every topic built in
  one place;
* :mod:`~fleet_connector.mqtt.takeover`: ``SessionWatch``, noticing a session taken over;
* :mod:`~fleet_connector.mqtt.replies`: ``ReplyCache``, a write delivered twice answered once.

Nothing is imported here, so fleetctl and the sender can take the broker settings and the
topics without paho's session code being loaded on their behalf.
"""
