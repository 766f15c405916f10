"""fleetctl: the operator's tool for one car or a whole fleet."""
