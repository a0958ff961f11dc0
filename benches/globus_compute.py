"""1,000 tasks through the unmodified Globus Compute SDK `Executor` against a funcx gateway.

Run by benches/globus_compute.sh, which starts the gateway and its endpoint
(examples/globus_compute.rs, release build) and exports what the SDK needs. Prints the
throughput of a burst of TASKS tasks (first submit to last result) and the round trip of
one task at a time (submit to result, ROUND_TRIPS of them): p50 and p99.

The Executor limits its own submissions (`api_burst_limit` calls per `api_burst_window_s`,
4 per 16 s by default, then up to a second of random delay each): a limit for the hosted
service that would otherwise measure the SDK's sleep, not the gateway. The Executor here is
the SDK's own, unmodified, with its loosest public setting (8 calls a second), and the
one-at-a-time round trips pause for a fresh window after every 7, so none is delayed by it.
"""

import os
import statistics
import sys
import time

from globus_compute_sdk import Client, Executor
from globus_compute_sdk.errors import TaskPending

TASKS = int(os.environ.get("TASKS", "1000"))
ROUND_TRIPS = int(os.environ.get("ROUND_TRIPS", "200"))


def identity(x):
    return x


def main():
    endpoint_id = os.environ["GC_ENDPOINT_ID"]
    with Executor(endpoint_id=endpoint_id, api_burst_limit=8, api_burst_window_s=1) as gce:
        # Warm: function registered, workers have it, AMQP watcher connected.
        for f in [gce.submit(identity, i) for i in range(50)]:
            f.result(timeout=120)

        started = time.perf_counter()
        futures = [gce.submit(identity, i) for i in range(TASKS)]
        results = [f.result(timeout=600) for f in futures]
        elapsed = time.perf_counter() - started
        assert results == list(range(TASKS))

        trips = []
        for i in range(ROUND_TRIPS):
            if i % 7 == 0:
                time.sleep(1.05)  # a fresh rate-limit window (see above)
            started = time.perf_counter()
            assert gce.submit(identity, i).result(timeout=120) == i
            trips.append(time.perf_counter() - started)
    # The same over HTTP: Client.run, then Client.get_result until it is there.
    client = Client()
    function_id = client.register_function(identity)
    polled = []
    for i in range(ROUND_TRIPS):
        started = time.perf_counter()
        task_id = client.run(i, endpoint_id=endpoint_id, function_id=function_id)
        while True:
            try:
                assert client.get_result(task_id) == i
                break
            except TaskPending:
                pass
        polled.append(time.perf_counter() - started)
    print(f"{TASKS} tasks through the Executor in {elapsed:.3f} s: {TASKS / elapsed:.0f} tasks/s")
    print(f"Executor round trip, one task at a time ({ROUND_TRIPS}): {percentiles(trips)}")
    print(f"Client.run + get_result polled, one at a time ({ROUND_TRIPS}): {percentiles(polled)}")


def percentiles(samples):
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1e3
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e3
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"


if __name__ == "__main__":
    sys.exit(main())
