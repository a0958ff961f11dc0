"""1,000 tasks through the unmodified Globus Compute SDK `Executor` against a funcx gateway.

Run by benches/globus_compute.sh, which starts the gateway and its endpoint
(examples/globus_compute.rs, release build) and exports what the SDK needs. Prints the
throughput of a burst of TASKS tasks (first submit to last result) and the round trip of
one task at a time (submit to result, ROUND_TRIPS of them): p50 and p99.
"""

import os
import statistics
import sys
import time

from globus_compute_sdk import Executor

TASKS = int(os.environ.get("TASKS", "1000"))
ROUND_TRIPS = int(os.environ.get("ROUND_TRIPS", "200"))


def identity(x):
    return x


def main():
    endpoint_id = os.environ["GC_ENDPOINT_ID"]
    with Executor(endpoint_id=endpoint_id) as gce:
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
            started = time.perf_counter()
            assert gce.submit(identity, i).result(timeout=120) == i
            trips.append(time.perf_counter() - started)
    trips.sort()
    p50 = statistics.median(trips) * 1e3
    p99 = trips[min(len(trips) - 1, int(len(trips) * 0.99))] * 1e3
    print(f"{TASKS} tasks through the Executor in {elapsed:.3f} s: {TASKS / elapsed:.0f} tasks/s")
    print(f"round trip, one task at a time ({ROUND_TRIPS}): p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    sys.exit(main())
