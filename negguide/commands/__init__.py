"""Subcommands of ``negguide`` about when negatives act: ``analyze`` and ``remove``."""
