"""The subcommands of ``fleet-server``; each module has ``add_parser`` and its options."""
