"""fleetctl's commands, one module per command or group of commands.

Each module has ``register(subcommands)``: it adds its command's parser with the flags that
command takes, and the :class:`~fleetctl.commands.command.Command` that checks and runs it.
Flags that several commands share are in :mod:`fleetctl.commands.options`; the app is
assembled in :mod:`fleetctl.cli`.
"""
