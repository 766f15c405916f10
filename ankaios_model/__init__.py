"""A model of Eclipse Ankaios 1.0: what the emulator and the connector must agree on.

The emulator serves this model to its clients; the connector replays updates on it to
tell what an apply would do before Ankaios does it. Neither may keep its own copy, or
the tests (which run the connector against the emulator) would stop proving anything.

* :mod:`ankaios_model.tree`: ``ank_base.CompleteState`` <-> plain trees, in the proto and
  the spec form, and manifests read as the server reads them;
* :mod:`ankaios_model.state`: the server's desired state (``DesiredState``: masked merge,
  validation, rendering, diff; ``UpdateError`` with the server's messages) and
  ``filter_tree``, the server's field-mask filter;
* :mod:`ankaios_model.templating`: handlebars as the server configures handlebars-rust;
* :mod:`ankaios_model.rendering`: a workload rendered with its configs
  (``RenderedWorkload``, ``render_workload``);
* :mod:`ankaios_model.workload_images`: the images a rendered workload's runtimeConfig
  runs, read as the agent reads it.

Nothing is imported here: the connector loads the model on a first plan or policy check
only (bench/README.md, "Footprint"). This package imports nothing of ``ankaios_emulator``,
``fleet_connector``, ``fleetctl`` or ``bench`` (tests/test_parts.py checks it).
"""
