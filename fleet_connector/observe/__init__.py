"""What the cloud sees of the car without asking for a change: states, outcomes, logs.

* :mod:`~fleet_connector.observe.live_model`: ``LiveModel``, each workload instance's and
  agent's state kept current from Ankaios's events (no I/O);
* :mod:`~fleet_connector.observe.workload_states`: ``WorkloadStates``, those states on
  retained topics;
* :mod:`~fleet_connector.observe.outcomes`: ``Outcomes``, what became of the workloads an
  apply or delete changed, for a requester that follows it;
* :mod:`~fleet_connector.observe.log_tail`: the last lines a set of instances printed;
* :mod:`~fleet_connector.observe.logs`: ``LogStreams``, workloads' logs streamed on demand.

Nothing is imported here: the log streams load on the first logs request.
"""
