"""The unmodified Globus Compute SDK against a funcx gateway: the gateway and its endpoint
are `crates/funcx-gateway/examples/globus_compute.rs`, started once for the session on localhost:5000 (where
GLOBUS_SDK_ENVIRONMENT=local points), with RabbitMQ on 127.0.0.1:5672.

Environment: FUNCX_GC_EXAMPLE (the example's binary; default target/debug/examples/
globus_compute), FUNCX_GC_PYTHON (the workers' interpreter; default this one),
FUNCX_GC_LISTEN (where the gateway listens; default 127.0.0.1:5000, what `localhost:5000`
names), FUNCX_GC_MANAGER (`funcx-manager`, for the MPI tests' block; default next to the
example's directory).
"""

import json
import os
import pathlib
import runpy
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import globus_sdk
import pytest
from globus_compute_sdk import Client
from globus_compute_sdk.errors import TaskPending

ROOT = pathlib.Path(__file__).resolve().parents[2]
GATEWAY = "http://localhost:5000"
# Every wait in these tests is bounded by this (the machine may be loaded).
WAIT_S = 120
# What a user's script defines (see user_functions.py).
USER_FUNCTIONS = pathlib.Path(__file__).with_name("user_functions.py")


def user_functions():
    """The user's functions, loaded as a script's are (as `__main__`)."""
    return runpy.run_path(str(USER_FUNCTIONS), run_name="__main__")


def wait_until(condition, what, timeout=WAIT_S, period=0.05):
    """Polls `condition` until it is truthy, or fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(period)


def result_of(client, task_id):
    """`Client.get_result`, once the task is no longer pending (bounded)."""

    def ready():
        try:
            return (client.get_result(task_id),)
        except TaskPending:
            return None

    return wait_until(ready, f"task {task_id}")[0]


def refused_batch(endpoint_id, function, **options):
    """The error of a one-task batch of `function` made with `create_batch(**options)`,
    which the gateway must refuse with a 400 (bounded: the SDK's HTTP calls time out)."""
    client = Client()
    function_id = client.register_function(function)
    batch = client.create_batch(**options)
    batch.add(function_id)
    with pytest.raises(globus_sdk.GlobusAPIError) as refused:
        client.batch_run(endpoint_id, batch)
    assert refused.value.http_status == 400, refused.value
    return refused.value


class Process:
    """A child process whose stdout lines are collected by a thread (so reading them is
    bounded) and whose stderr goes to a file shown when something fails."""

    def __init__(self, args, log, env=None):
        self.log = log
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def values(self, names, timeout=WAIT_S):
        def found():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.proc.args[0]} exited ({self.proc.returncode}):\n"
                    + pathlib.Path(self.log).read_text(errors="replace")[-4000:]
                )
            pairs = dict(line.split("=", 1) for line in self.lines if "=" in line)
            return pairs if all(n in pairs for n in names) else None

        return wait_until(found, f"the lines {names}", timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


def example_binary():
    return os.environ.get(
        "FUNCX_GC_EXAMPLE", str(ROOT / "target" / "debug" / "examples" / "globus_compute")
    )


def manager_binary():
    """`funcx-manager`, built next to the example (scripts/test builds both)."""
    return os.environ.get(
        "FUNCX_GC_MANAGER", str(pathlib.Path(example_binary()).parents[1] / "funcx-manager")
    )


def workers_python():
    return os.environ.get("FUNCX_GC_PYTHON", sys.executable)


def http(method, path, token, body=None):
    """A call to the gateway's funcx API (for what the SDK has no call for)."""
    request = urllib.request.Request(
        GATEWAY + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def endpoint_status(endpoint_id, token):
    return http("GET", f"/v2/endpoints/{endpoint_id}/status", token)["status"]


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """The running example: its printed values, as a dict."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    listen = os.environ.get("FUNCX_GC_LISTEN", "127.0.0.1:5000")
    process = Process(
        [example_binary(), "--python", workers_python(), "--listen", listen], log
    )
    try:
        values = process.values(
            [
                "GC_ENDPOINT_ID",
                "GLOBUS_COMPUTE_CLIENT_ID",
                "GLOBUS_COMPUTE_CLIENT_SECRET",
                "FUNCX_GATEWAY_TOKEN",
            ]
        )
        token = values["FUNCX_GATEWAY_TOKEN"]
        wait_until(
            lambda: endpoint_status(values["GC_ENDPOINT_ID"], token) == "online",
            "the endpoint to come online",
        )
        values["log"] = str(log)
        yield values
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def sdk_environment(gateway, monkeypatch, tmp_path):
    """What a user exports to run an unmodified script against the gateway, plus a token
    store of the test's own (so no test reuses another's tokens)."""
    monkeypatch.setenv("GLOBUS_SDK_ENVIRONMENT", "local")
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", GATEWAY + "/")
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", gateway["GLOBUS_COMPUTE_CLIENT_ID"])
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", gateway["GLOBUS_COMPUTE_CLIENT_SECRET"])
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path / "globus_compute"))


@pytest.fixture
def endpoint_id(gateway):
    return gateway["GC_ENDPOINT_ID"]


@pytest.fixture
def process_factory(tmp_path):
    """Starts processes that are stopped when the test ends."""
    started = []

    def start(args, env=None):
        """`args` run with `env` added to this process's environment."""
        process = Process(args, tmp_path / f"process-{len(started)}.log", env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def example():
    return example_binary(), workers_python()
