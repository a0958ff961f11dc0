"""Globus Compute's MPIFunction through a funcx gateway: `resource_specification` picks the
task's nodes of a block that a real `funcx-manager` holds (`--block-nodes`: this machine's
host name and `localhost`, two names of one node, as in crates/funcx-gateway/tests/
mpi_nodes.rs), and real Open MPI (scripts/infra/mpi-up.sh) runs the ranks on them."""

import os
import socket
import uuid

import globus_sdk
import pytest
from globus_compute_sdk import Executor, MPIFunction, ShellFunction
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.sdk.shell_function import ShellResult

from conftest import (
    GATEWAY,
    WAIT_S,
    endpoint_status,
    http,
    manager_binary,
    refused_batch,
    user_functions,
    wait_until,
)

worker_state = user_functions()["worker_state"]

# How soon a task the block cannot hold fails: the gateway refuses it when it is submitted
# (as AT_ONCE in tests/slurm_block.rs), far sooner than any wait for a node.
AT_ONCE_S = 10


# Every rank writes its rank, the world's size and the nodes the task was given, as one
# write (so that mpirun's forwarding never interleaves two ranks' lines). No braces:
# MPIFunction formats its command with the call's keyword arguments.
RANKS = (
    "/usr/bin/python3 -c 'import os; from mpi4py import MPI; c = MPI.COMM_WORLD; "
    'line = "rank %d of %d %s\\n" % (c.Get_rank(), c.Get_size(), os.environ["PARSL_MPI_NODELIST"]); '
    "os.write(1, line.encode())'"
)


@pytest.fixture(scope="module")
def block():
    return [socket.gethostname(), "localhost"]


@pytest.fixture
def block_endpoint(gateway, example, process_factory, block):
    """A new endpoint holding a block of two nodes, whose one worker is a real
    `funcx-manager` (one worker, so every task of a test runs in the same process)."""
    token = gateway["FUNCX_GATEWAY_TOKEN"]
    registered = http("POST", "/v1/endpoints", token, {"name": "mpi-block"})
    binary, python = example
    endpoint = process_factory(
        [
            binary,
            "--python",
            python,
            "--workers",
            "1",
            "--join",
            GATEWAY,
            "--endpoint-id",
            registered["endpoint_id"],
            "--endpoint-token",
            registered["endpoint_token"],
            "--block-nodes",
            ",".join(block),
        ]
    )
    values = endpoint.values(["FUNCX_MANAGER_ADDRESS", "FUNCX_MANAGER_TOKEN"])
    process_factory(
        [
            manager_binary(),
            "--endpoint",
            values["FUNCX_MANAGER_ADDRESS"],
            "--workers",
            "1",
            "--block-nodes",
            ",".join(block),
            "--python",
            python,
            "--give-up-after",
            "60",
        ],
        env={"FUNCX_TOKEN": values["FUNCX_MANAGER_TOKEN"], "RUST_LOG": "warn"},
    )
    endpoint_id = str(uuid.UUID(registered["endpoint_id"]))
    wait_until(lambda: endpoint_status(endpoint_id, token) == "online", "the block endpoint")
    return endpoint_id


def ranks_of(result):
    """(rank, size, nodes) of every rank line of an MPIFunction's output."""
    assert isinstance(result, ShellResult), result
    assert result.returncode == 0, repr(result)
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("rank ")]
    return sorted((int(rank), int(size), nodes) for _, rank, _, size, nodes in lines)


def test_mpi_function_runs_every_rank_on_the_nodes_its_resource_specification_asked_for(
    block_endpoint, block
):
    function = MPIFunction(RANKS, walltime=60)
    with Executor(endpoint_id=block_endpoint) as gce:
        gce.resource_specification = {"num_nodes": 2, "ranks_per_node": 1}
        both = gce.submit(function).result(timeout=WAIT_S)
        gce.resource_specification = {"num_nodes": 1, "num_ranks": 2}
        one = gce.submit(function).result(timeout=WAIT_S)
        gce.resource_specification = {"num_nodes": 3}
        too_many = gce.submit(function)
        # Within AT_ONCE_S, or result() raises TimeoutError instead.
        with pytest.raises(TaskExecutionFailed) as unsatisfiable:
            too_many.result(timeout=AT_ONCE_S)
        gce.resource_specification = None
        after = gce.submit(worker_state).result(timeout=WAIT_S)

    # Two nodes, a rank on each: both ranks answered, and the task held both nodes.
    assert [(rank, size) for rank, size, _ in ranks_of(both)] == [(0, 2), (1, 2)]
    assert {nodes for _, _, nodes in ranks_of(both)} == {",".join(block)}
    # One node, two ranks on it: a single node of the block.
    assert [(rank, size) for rank, size, _ in ranks_of(one)] == [(0, 2), (1, 2)]
    (nodes,) = {nodes for _, _, nodes in ranks_of(one)}
    assert nodes in block, nodes
    # More nodes than the block has: failed, saying so, instead of waiting forever.
    assert "3 nodes" in str(unsatisfiable.value), str(unsatisfiable.value)
    # The worker that ran them is as it was: nothing of the launch is left in it.
    assert after["leftovers"] == [], after
    assert "gc-task-" not in after["cwd"], after


def test_shell_function_runs_in_a_sandbox_that_is_gone_after_it(endpoint_id):
    function = ShellFunction("pwd; echo $PARSL_MPI_PREFIX")
    with Executor(endpoint_id=endpoint_id) as gce:
        result = gce.submit(function).result(timeout=WAIT_S)
    assert result.returncode == 0, repr(result)
    sandbox, prefix = (result.stdout.splitlines() + [""])[:2]
    assert "/gc-task-" in sandbox, result.stdout
    # No resource specification: no launch prefix, and no sandbox warning from the SDK.
    assert prefix == "", result.stdout
    assert "sandboxing will not work" not in result.stderr, result.stderr
    assert not os.path.exists(sandbox)


BAD_SPECIFICATIONS = [
    ({"num_nodes": 2, "gpus": 1}, "does not take"),
    ({"num_nodes": 0}, "num_nodes must be an integer from 1"),
    ({"num_ranks": "four"}, "num_ranks must be an integer from 1"),
    ({"num_nodes": 1, "ranks_per_node": 2, "num_ranks": 3}, "num_ranks is at most"),
]


@pytest.mark.parametrize("specification,message", BAD_SPECIFICATIONS)
def test_a_bad_resource_specification_is_refused_with_what_is_wrong(
    endpoint_id, specification, message
):
    refused = refused_batch(endpoint_id, worker_state, resource_specification=specification)
    assert message in refused.message, refused.message


def test_an_executor_with_a_bad_resource_specification_fails_its_future(endpoint_id):
    gce = Executor(endpoint_id=endpoint_id, resource_specification={"nodes": 2})
    try:
        future = gce.submit(worker_state)
        with pytest.raises(globus_sdk.GlobusAPIError) as refused:
            future.result(timeout=WAIT_S)
    finally:
        gce.shutdown(wait=False, cancel_futures=True)
    assert "does not take" in refused.value.message
