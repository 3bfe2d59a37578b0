"""Every actor module imports and has the run(runtime) the supervisor calls after the fork."""

import importlib

import pytest

from supervisor import ACTORS


@pytest.mark.parametrize("name, module", sorted(ACTORS.items()))
def test_each_actor_module_has_a_run_function(name, module):
    assert callable(importlib.import_module(module).run)


def test_there_are_exactly_the_five_named_actors():
    assert set(ACTORS) == {"slurm_querier", "translator", "rest_submitter", "nats_publisher", "hook_listener"}
