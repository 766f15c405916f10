"""The connector's Ankaios side: the control interface and requests in Ankaios's terms.

* :mod:`~fleet_connector.ankaios.control_interface`: ``ControlInterface``, the two FIFOs
  to the agent with length-prefixed protobuf frames;
* :mod:`~fleet_connector.ankaios.client`: ``Ankaios``, apply, delete and read state, the
  answers as the SDK's objects;
* :mod:`~fleet_connector.ankaios.manifest`: ``Manifest``, a YAML manifest read into the
  protobuf state and update masks the control interface takes.

How the Ankaios server itself behaves (merge, rendering) is :mod:`ankaios_model`.
Nothing is imported here.
"""
