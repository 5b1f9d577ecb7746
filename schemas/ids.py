"""Identifiers every producer must compute the same way (experiment ids from names, run ids)."""

from __future__ import annotations

import uuid

# Fixed forever: changing it would split every experiment in two.
_EXPERIMENT_NAMESPACE = uuid.UUID("6f1c2d8e-54a4-4c55-9a53-2f0c7e1b9d21")


def experiment_id_for_name(name: str, generation: int = 0) -> str:
    """The id of the experiment called ``name``, the same in every process.

    Many processes creating the same experiment at once (twenty ranks calling
    ``set_experiment``) therefore publish the same id and end with one experiment, with no
    coordination. ``generation`` counts earlier experiments that held the name and were
    renamed away: a query node that knows the read model passes it, so a new experiment
    reusing an old name gets an id of its own.
    """
    seed = name if generation == 0 else f"{name}\x00{generation}"
    return uuid.uuid5(_EXPERIMENT_NAMESPACE, seed).hex[:16]


def new_run_id() -> str:
    """A fresh run id: 32 hex digits, as MLflow's."""
    return uuid.uuid4().hex
