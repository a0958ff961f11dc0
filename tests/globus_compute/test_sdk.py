"""The Globus Compute SDK (unmodified, from PyPI) against a funcx gateway and endpoint."""

import concurrent.futures
import uuid

import globus_sdk
import pytest
from globus_compute_sdk import Client, Executor
from globus_compute_sdk.errors import TaskExecutionFailed, TaskPending
from globus_compute_sdk.serialize import ComputeSerializer, JSONData
from globus_compute_sdk.serialize.utils import unpack_buffers

from conftest import (
    GATEWAY,
    USER_FUNCTIONS,
    WAIT_S,
    endpoint_status,
    http,
    result_of,
    user_functions,
    wait_until,
)


_USER = user_functions()
square = _USER["square"]
describe = _USER["describe"]
divide = _USER["divide"]
slow_double = _USER["slow_double"]


def test_executor_runs_many_tasks_and_each_result_is_its_own(endpoint_id):
    with Executor(endpoint_id=endpoint_id) as gce:
        futures = [gce.submit(square, i) for i in range(300)]
        results = [f.result(timeout=WAIT_S) for f in futures]
    assert results == [i * i for i in range(300)]
    # Every future got a task id from the gateway, all distinct.
    assert len({f.task_id for f in futures}) == 300


def test_keyword_arguments_reach_the_function(endpoint_id):
    with Executor(endpoint_id=endpoint_id) as gce:
        plain = gce.submit(describe, 2)
        keywords = gce.submit(describe, 2, b=3, label="total", scale=10)
        assert plain.result(timeout=WAIT_S) == "sum=2"
        assert keywords.result(timeout=WAIT_S) == "total=50"


def test_a_remote_exception_raises_task_execution_failed_with_its_traceback(endpoint_id):
    with Executor(endpoint_id=endpoint_id) as gce:
        future = gce.submit(divide, 1, 0)
        with pytest.raises(TaskExecutionFailed) as failure:
            future.result(timeout=WAIT_S)
        # A good task in the same group is unaffected.
        assert gce.submit(divide, 6, 3).result(timeout=WAIT_S) == 2
    text = str(failure.value)
    assert "ZeroDivisionError" in text
    assert "in divide" in text and "return a / b" in text, text
    # The shim's own frames are not the user's business.
    assert "_funcx_globus_compute_task" not in text, text


def test_client_run_get_result_and_get_batch_result(endpoint_id):
    client = Client()
    function_id = client.register_function(square)
    task_id = client.run(7, endpoint_id=endpoint_id, function_id=function_id)
    assert result_of(client, task_id) == 49
    assert client.get_task(task_id)["status"] == "success"

    batch = client.create_batch()
    for i in range(10):
        batch.add(function_id, args=(i,))
    divide_id = client.register_function(divide)
    batch.add(divide_id, args=(1, 0))
    submitted = client.batch_run(endpoint_id, batch)
    ids = submitted["tasks"][function_id]
    (failing,) = submitted["tasks"][divide_id]
    assert len(ids) == 10

    def all_done():
        results = client.get_batch_result(ids)
        return results if not any(r["pending"] for r in results.values()) else None

    results = wait_until(all_done, "the batch")
    assert [results[t]["result"] for t in ids] == [i * i for i in range(10)]

    # A failed task: get_result raises it with the remote traceback (get_batch_result logs
    # it and leaves it out, as the SDK does with any failed task).
    def failed():
        try:
            client.get_result(failing)
        except TaskPending:
            return None
        except TaskExecutionFailed as failure:
            return failure
        pytest.fail("the failing task succeeded")

    assert "ZeroDivisionError" in str(wait_until(failed, "the failing task"))
    assert failing not in client.get_batch_result([failing])
    # Unknown ids are left out, as the hosted service does.
    unknown = str(uuid.uuid4())
    assert unknown not in client.get_batch_result([ids[0], unknown])


def test_register_source_code_runs_the_source(endpoint_id):
    client = Client()
    function_id = client.register_source_code(
        "def hello(name, punctuation='!'):\n    return f'hi {name}{punctuation}'\n", "hello"
    )
    task_id = client.run("rust", endpoint_id=endpoint_id, function_id=function_id)
    assert result_of(client, task_id) == "hi rust!"
    assert client.get_function(function_id)["function_name"] == "hello"


def test_json_results_when_the_client_asks_for_them(endpoint_id):
    with Executor(endpoint_id=endpoint_id, result_serializers=[JSONData()]) as gce:
        future = gce.submit(describe, 1, b=1)
        assert future.result(timeout=WAIT_S) == "sum=2"
    # The result travelled as JSON ("11" header), which the gateway could read if needed.
    client = Client()
    record = client._compute_web_client.v2.get_task(future.task_id).data
    assert record["result"].startswith("11\n"), record


# A client that submits to a task group, prints its task ids, and dies without a goodbye.
CRASHING_CLIENT = """
import os, runpy, sys, time
from globus_compute_sdk import Executor
user = runpy.run_path(sys.argv[1], run_name="__main__")
gce = Executor(endpoint_id=sys.argv[2], task_group_id=sys.argv[3])
futures = [gce.submit(user["slow_double"], i, 2.0) for i in range(4)]
deadline = time.monotonic() + 120
while not all(f.task_id for f in futures) and time.monotonic() < deadline:
    time.sleep(0.05)
print(" ".join(str(f.task_id) for f in futures), flush=True)
os._exit(0)
"""


def test_reload_tasks_of_a_task_group_after_its_client_crashed(endpoint_id):
    import subprocess
    import sys

    task_group = str(uuid.uuid4())
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_CLIENT, str(USER_FUNCTIONS), endpoint_id, task_group],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert crashed.returncode == 0, crashed.stderr
    submitted = set(crashed.stdout.split())
    assert len(submitted) == 4, crashed.stdout

    with Executor(endpoint_id=endpoint_id, task_group_id=task_group) as gce:
        reloaded = list(gce.reload_tasks())
        assert {f.task_id for f in reloaded} == submitted
        done, pending = concurrent.futures.wait(reloaded, timeout=WAIT_S)
        assert not pending
        assert sorted(f.result() for f in done) == [0, 2, 4, 6]


def test_a_stopped_endpoint_keeps_its_tasks_until_it_runs_again(
    gateway, example, process_factory
):
    token = gateway["FUNCX_GATEWAY_TOKEN"]
    registered = http("POST", "/v1/endpoints", token, {"name": "stopped"})
    hex_id = registered["endpoint_id"]
    stopped = str(uuid.UUID(hex_id))
    client = Client()
    assert client.get_endpoint_status(stopped)["status"] == "offline"
    assert endpoint_status(stopped, token) == "offline"

    function_id = client.register_function(square)
    task_id = client.run(12, endpoint_id=stopped, function_id=function_id)
    with pytest.raises(TaskPending):
        client.get_result(task_id)
    assert client.get_task(task_id)["status"] == "waiting-for-ep"
    with Executor(endpoint_id=stopped) as gce:
        future = gce.submit(square, 5)
        wait_until(lambda: future.task_id, "the task id")
        assert not future.done()

        # The endpoint starts (as another process): both tasks run.
        binary, python = example
        process_factory(
            [
                binary,
                "--python",
                python,
                "--join",
                GATEWAY,
                "--endpoint-id",
                hex_id,
                "--endpoint-token",
                registered["endpoint_token"],
            ]
        )
        assert future.result(timeout=WAIT_S) == 25
    assert result_of(client, task_id) == 144
    assert client.get_endpoint_status(stopped)["status"] == "online"


def test_a_static_token_works_as_access_token_authorizer(gateway, endpoint_id):
    authorizer = globus_sdk.AccessTokenAuthorizer(gateway["FUNCX_GATEWAY_TOKEN"])
    client = Client(authorizer=authorizer, local_compute_services=True)
    with Executor(endpoint_id=endpoint_id, client=client) as gce:
        assert gce.submit(square, 9).result(timeout=WAIT_S) == 81
    assert client.get_endpoint_metadata(endpoint_id)["uuid"] == endpoint_id
    assert endpoint_id in [e["uuid"] for e in client.get_endpoints()]


def test_refused_credentials_raise_and_run_nothing(gateway, endpoint_id, monkeypatch):
    wrong = Client(
        authorizer=globus_sdk.AccessTokenAuthorizer("not-a-token-this-gateway-issued"),
        local_compute_services=True,
    )
    with pytest.raises(globus_sdk.GlobusAPIError) as refused:
        wrong.register_function(square)
    assert refused.value.http_status == 401

    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "a-wrong-secret-for-this-client")
    with pytest.raises(globus_sdk.GlobusAPIError) as refused:
        Client().register_function(square)
    assert refused.value.http_status == 401


def test_functions_can_be_read_and_deleted_by_their_owner(endpoint_id):
    client = Client()
    function_id = client.register_function(square, description="squares")
    record = client.get_function(function_id)
    assert record["function_name"] == "square"
    assert record["description"] == "squares"
    # The code is what the SDK sent: one packed buffer the SDK deserializes back.
    (buffer,) = unpack_buffers(record["function_code"])
    assert ComputeSerializer().deserialize(buffer)(3) == 9
    client.delete_function(function_id)
    with pytest.raises(globus_sdk.GlobusAPIError) as missing:
        client.get_function(function_id)
    assert missing.value.http_status == 404
