"""runstream: event-sourced experiment tracking on Kafka and DuckDB.

A training script needs one import: ``import runstream`` (the training client; see the
README). The command line is ``runstream --help``.
"""

__version__ = "0.1.0"
