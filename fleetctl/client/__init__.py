"""Talking to cars: fleetctl's MQTT connection, requests and their replies (read as hostile
data), presence, live states, logs, waves of requests, signed requests, and which cars."""
