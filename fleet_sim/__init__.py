"""fleet-sim: many simulated cars speaking the fleet connector's MQTT protocol, for load.

It is a load tool, not the connector: no Ankaios, no containers, no policy, no signatures.
Each simulated car answers requests in the connector's shapes from a small in-memory model
(desired workloads and configs, instances, a journal), so a fleet service can be measured
against tens of thousands of cars from one process. docs/fleet-sim.md says what it models
and what it does not; tests/sim holds its replies to the connector's shapes.
"""
