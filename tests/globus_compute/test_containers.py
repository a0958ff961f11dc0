"""A container per task, as Globus Compute's dynamic_containers tutorial chooses one:
`user_endpoint_config={"container_type": "podman", "container_uri": IMAGE}` runs the tasks
on warm workers started in IMAGE with podman (scripts/infra/podman-up.sh; the image is
scripts/gc-image.sh's: the workers' venv inside localhost/funcx-python:latest)."""

import pathlib
import subprocess

import pytest
from globus_compute_sdk import Client, Executor
from globus_compute_sdk.errors import TaskExecutionFailed

from conftest import ROOT, WAIT_S, refused_batch, result_of, user_functions, workers_python

container_image = user_functions()["container_image"]


@pytest.fixture(scope="module")
def gc_image():
    venv = pathlib.Path(workers_python()).parents[1]
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gc-image.sh"), str(venv)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert built.returncode == 0, built.stderr
    return built.stdout.strip()


def test_a_container_uri_runs_the_tasks_in_that_image_and_no_others(endpoint_id, gc_image):
    config = {"container_type": "podman", "container_uri": gc_image}
    with Executor(endpoint_id=endpoint_id, user_endpoint_config=config) as gce:
        inside = [gce.submit(container_image) for _ in range(4)]
        assert [f.result(timeout=WAIT_S) for f in inside] == [gc_image] * 4
        # The same executor without the config: the endpoint's own workers again.
        gce.user_endpoint_config = None
        assert gce.submit(container_image).result(timeout=WAIT_S) is None


def test_a_client_batch_in_an_image_reads_its_results_over_http(endpoint_id, gc_image):
    client = Client()
    function_id = client.register_function(container_image)
    batch = client.create_batch(user_endpoint_config={"container_uri": gc_image})
    batch.add(function_id)
    (task_id,) = client.batch_run(endpoint_id, batch)["tasks"][function_id]
    assert result_of(client, task_id) == gc_image


def test_an_image_the_endpoint_lacks_fails_its_tasks_naming_it(endpoint_id):
    missing = "localhost/funcx-no-such-image:1"
    with Executor(endpoint_id=endpoint_id, user_endpoint_config={"container_uri": missing}) as gce:
        future = gce.submit(container_image)
        with pytest.raises(TaskExecutionFailed) as failed:
            future.result(timeout=WAIT_S)
    assert missing in str(failed.value), str(failed.value)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"worker_init": "module load x", "container_uri": "a"}, '["worker_init"]'),
        ({"container_uri": "a", "container_cmd_options": "-v /:/host"}, "container_cmd_options"),
        ({"container_uri": "a", "container_type": "singularity"}, "container_type"),
    ],
)
def test_other_endpoint_settings_are_refused_with_what_is_wrong(endpoint_id, config, message):
    refused = refused_batch(endpoint_id, container_image, user_endpoint_config=config)
    assert message in refused.message, refused.message
