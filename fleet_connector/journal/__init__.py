"""What the connector remembers across restarts: the journal of its changes to Ankaios.

* :mod:`~fleet_connector.journal.store`: ``Store``, one crash-safe SQLite database in
  ``STATE_DIR``;
* :mod:`~fleet_connector.journal.entries`: ``Journal`` and ``Entry``, one row per change;
* :mod:`~fleet_connector.journal.changes`: ``Changes``, a change carried out exactly once;
* :mod:`~fleet_connector.journal.rollback`: the update that undoes a journaled change;
* :mod:`~fleet_connector.journal.reconcile`: ``Reconciler``, drift found and put back;
* :mod:`~fleet_connector.journal.crashpoints`: test-only crash points inside a change.

Nothing is imported here: without ``STATE_DIR`` the connector loads none of it, apart from
the crash points its configuration names.
"""
