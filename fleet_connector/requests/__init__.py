"""Deciding on a request: from its payload to what Ankaios is asked, and the reply.

* :mod:`~fleet_connector.requests.handler`: ``Handler`` and ``Request``, a request's payload
  to its reply text, never raising;
* :mod:`~fleet_connector.requests.validation`: manifests checked against the JSON Schema of
  ``ank apply`` (the schemas are in ``schemas/``), plus warnings;
* :mod:`~fleet_connector.requests.signatures`: ``Verifier``, Ed25519-signed requests;
* :mod:`~fleet_connector.requests.policy`: ``Policy``, what the car's owner allows;
* :mod:`~fleet_connector.requests.started`: which workloads an update starts or restarts,
  rendered, for the policy's rules on what runs;
* :mod:`~fleet_connector.requests.plan`: what an apply or delete would do, without doing it;
* :mod:`~fleet_connector.requests.redaction`: ``Redactor``, the connector's secrets kept out
  of replies.

Nothing is imported here: validation, signatures, plan and the policy's server model
are loaded on first use (bench/README.md, "Footprint").
"""
