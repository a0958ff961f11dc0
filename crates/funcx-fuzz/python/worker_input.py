"""The `worker-input` fuzz target: what the Rust side writes on a Python worker's pipe
(FUNCTION, TASKS, CANCEL, SHUTDOWN frames), mutated, read by the real worker loop
(crates/funcx-python/src/worker.py).

A worker may answer a malformed stream only with ProtocolError or struct.error, which its
main() reports as a protocol error and exits 2 on; any other exception, or an input that
runs past the watchdog, is a finding. What the frames carry is not under test and must not
run: arguments are passed through as bytes instead of unpickled (a hostile pickle can run
code or take seconds to load: that is pickle, which endpoints refuse with
allowed_formats = ["json"]), and function sources are compiled, never executed.

    python3 worker_input.py WORKER_PY [--inputs N] [--seed S]

Prints one JSON line; exits 1 on a finding, with the input in hex on stderr.
"""

import json
import os
import pickle
import random
import signal
import struct
import sys
import time

HANG_SECONDS = 10


def load_worker(path):
    source = open(path, encoding="utf-8").read()
    # worker.py ends by calling main(); everything before it only defines things.
    body, _, tail = source.rpartition("\nmain()")
    if tail.strip():
        raise SystemExit("worker_input.py: %s does not end with main()" % path)
    namespace = {"__name__": "funcx_worker_under_fuzz"}
    exec(compile(body, path, "exec"), namespace)
    return namespace


def safe_loads(data):
    return bytes(data)


def make_safe(ns):
    class SafePickle:
        loads = staticmethod(safe_loads)
        dumps = staticmethod(pickle.dumps)
        # Results of tasks with large arguments are pickled in parts (worker.py); writing a
        # pickle is safe, only reading one is replaced.
        Pickler = pickle.Pickler
        UnpicklingError = pickle.UnpicklingError

    ns["pickle"] = SafePickle
    protocol_error = ns["ProtocolError"]

    def load_function(form, name, body):
        if form == ns["FORM_SOURCE"]:
            compile(str(body, "utf-8", "replace"), "<funcx:%s>" % name, "exec")
        elif form != ns["FORM_PICKLED"]:
            raise protocol_error("unknown function form %d" % form)
        return lambda *args, **kwargs: [args, sorted(kwargs)]

    ns["load_function"] = load_function
    # The worker grows its buffer at most this far ahead of what arrived; the default
    # (64 MiB) is memory an input may cost, but zeroing it for every input would make a
    # campaign crawl. Under test: that the bound holds, not its size.
    ns["GROW_AHEAD"] = 1 << 20
    # Likewise the first buffer of each worker (1 MiB), allocated once per input here.
    ns["MIN_BUFFER"] = 1 << 16


def frame(kind, body):
    return struct.pack("<IB", len(body), kind) + body


def seeds(ns):
    source = b"def f(x, scale=1):\n    return x * scale\n"
    name = b"f"
    function = frame(ns["K_FUNCTION"], struct.pack("<IBH", 1, ns["FORM_SOURCE"], len(name)) + name + source)
    pickled_fn = frame(ns["K_FUNCTION"], struct.pack("<IBH", 2, ns["FORM_PICKLED"], 1) + b"g" + pickle.dumps(len))
    rejected = frame(ns["K_FUNCTION"], struct.pack("<IBH", 3, ns["FORM_REJECTED"], 1) + b"h" + b"refused")

    def task(task_id, key, flags, args, kwargs=()):
        out = struct.pack("<QIBHH", task_id, key, flags, len(args), len(kwargs))
        for a in args:
            out += struct.pack("<I", len(a)) + a
        for k, v in kwargs:
            out += struct.pack("<H", len(k)) + k + struct.pack("<I", len(v)) + v
        return out

    def tasks(*items):
        return frame(ns["K_TASKS"], struct.pack("<I", len(items)) + b"".join(items))

    one = tasks(task(1, 1, 0, [pickle.dumps(21)]))
    many = tasks(
        task(2, 1, 0, [pickle.dumps([1, 2]), pickle.dumps("x")], [(b"scale", pickle.dumps(3))]),
        task(3, 1, ns["F_ISOLATE"], [pickle.dumps({"a": 1.5})]),
        task(4, 2, 0, [pickle.dumps(b"bytes")]),
        task(5, 9, 0, [pickle.dumps(None)]),
        task(6, 1, ns["F_REJECTED"], []),
    )
    as_json = tasks(task(7, 1, ns["F_JSON"], [b"[1, 2.5, \"x\", null]"], [(b"scale", b"2")]))
    cancel = frame(ns["K_CANCEL"], struct.pack("<I", 2) + struct.pack("<QQ", 2, 3))
    shutdown = frame(ns["K_SHUTDOWN"], b"")
    return [
        function + one + shutdown,
        function + pickled_fn + rejected + many + cancel + shutdown,
        function + as_json + shutdown,
        function + cancel + many,
        one,
    ]


INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


def mutate(rng, corpus, max_len):
    data = bytearray(rng.choice(corpus))
    for _ in range(1 + rng.randrange(8)):
        n = len(data)
        op = rng.randrange(8)
        if op == 0 and n:
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            data[rng.randrange(n)] = rng.randrange(256)
        elif op == 2:
            at = rng.randrange(n + 1)
            data[at:at] = bytes(rng.randrange(256) for _ in range(1 + rng.randrange(8)))
        elif op == 3 and n:
            at = rng.randrange(n)
            del data[at : at + 1 + rng.randrange(16)]
        elif op == 4 and n >= 4:
            at = rng.randrange(n - 3)
            data[at : at + 4] = struct.pack("<I", rng.choice(INTERESTING))
        elif op == 5 and n >= 2:
            at = rng.randrange(n - 1)
            data[at : at + 2] = struct.pack("<H", rng.choice(INTERESTING) & 0xFFFF)
        elif op == 6 and n:
            del data[rng.randrange(n) :]
        else:
            other = rng.choice(corpus)
            data = data[: rng.randrange(n + 1)] + other[rng.randrange(len(other) + 1) :]
    return bytes(data[:max_len])


class Hang(Exception):
    pass


def on_alarm(_signum, _frame):
    raise Hang()


def run_one(ns, data, devnull):
    read_end, write_end = os.pipe()
    try:
        # Inputs are at most 16 KiB: the pipe holds them whole.
        os.write(write_end, data)
        os.close(write_end)
        write_end = None
        # No shared files (`shared_pid` None): a frame that claims one is refused as the
        # worker refuses it when its probe failed.
        worker = ns["Worker"](read_end, devnull, 1 << 20, None)
        try:
            worker.run()
        except (ns["ProtocolError"], struct.error):
            return "protocol error"
        return "ok"
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    worker_py = args.pop(0)
    inputs, seed = 10_000, 1
    while args:
        flag = args.pop(0)
        if flag == "--inputs":
            inputs = int(args.pop(0).replace("_", ""))
        elif flag == "--seed":
            seed = int(args.pop(0))
        else:
            raise SystemExit("worker_input.py: unknown argument %r" % flag)
    ns = load_worker(worker_py)
    make_safe(ns)
    corpus = seeds(ns)
    devnull = os.open(os.devnull, os.O_WRONLY)
    signal.signal(signal.SIGALRM, on_alarm)
    outcomes = {}
    started = time.monotonic()
    slowest = 0.0
    for index in range(inputs):
        data = corpus[index] if index < len(corpus) else mutate(random.Random(seed * 1_000_003 + index), corpus, 16384)
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        began = time.monotonic()
        try:
            outcome = run_one(ns, data, devnull)
        except Hang:
            outcome = None
            what = "ran over %d s" % HANG_SECONDS
        except BaseException as exc:  # noqa: BLE001 - every other exception is a finding
            outcome = None
            what = "%s: %s" % (type(exc).__name__, exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.monotonic() - began)
        if outcome is None:
            sys.stderr.write("worker-input input %d (seed %d): %s; input = %s\n" % (index, seed, what, data[:512].hex()))
            print(json.dumps({"target": "worker-input", "seed": seed, "finding_index": index, "findings": 1}))
            return 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    elapsed = time.monotonic() - started
    print(json.dumps({
        "target": "worker-input",
        "inputs": inputs,
        "seed": seed,
        "corpus": len(corpus),
        "secs": round(elapsed, 1),
        "inputs_per_s": round(inputs / elapsed),
        "slowest_ms": round(slowest * 1e3, 3),
        "outcomes": outcomes,
        "findings": 0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
