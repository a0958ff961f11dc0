# The body of a funcx shell function (crates/funcx-core/src/shell.rs): runs a command line
# filled from the task's arguments in a sandbox directory of its own. Standard library only.
# shell.rs puts task_placement.py and `_CONFIG = _json.loads(...)` in front of this text.


class ShellCommandFailed(Exception):
    """Raised instead of returning a result when the function was built with
    fail_on_error and the command exits non-zero (or times out)."""


class _Quoting(_string.Formatter):
    # Every value that fills a field is one shell word, whatever it holds: a value never
    # becomes syntax of the command line.
    def format_field(self, value, format_spec):
        return _shlex.quote(format(value, format_spec))


def _tail(stream, keep, max_line, into):
    """Reads `stream` to its end, keeping the last `keep` lines, each cut at `max_line`
    bytes, so that memory stays bounded however much the command writes."""
    lines = _collections.deque(maxlen=keep)
    total_lines = 0
    total_bytes = 0
    cut = False
    cut_lines = 0
    while True:
        chunk = stream.readline(max_line)
        if not chunk:
            break
        total_bytes += len(chunk)
        ends = chunk.endswith(b"\n")
        if cut:
            # The rest of a line already cut: dropped.
            cut = not ends
            continue
        total_lines += 1
        if not ends and len(chunk) >= max_line:
            cut = True
            cut_lines += 1
            chunk = chunk + b" [line cut]\n"
        lines.append(chunk)
    into["text"] = b"".join(lines).decode("utf-8", "replace")
    into["lines"] = total_lines
    into["bytes"] = total_bytes
    into["truncated"] = total_lines > len(lines) or cut_lines > 0


def _kill_group(pgid):
    try:
        _os.killpg(pgid, _signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_worker():
    """A preexec_fn that has the kernel kill the shell when the worker dies (a worker killed
    for a task's timeout or a cancellation cannot clean up after itself). The setting
    survives exec, so a command the shell execs (dash execs the last simple command) dies
    too; what the command starts in the background does not. None where prctl is missing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    worker = _os.getpid()

    def die_with_worker():
        prctl(1, _signal.SIGKILL)  # PR_SET_PDEATHSIG
        # The worker may already have died between fork and prctl.
        if _os.getppid() != worker:
            _os._exit(137)

    return die_with_worker


def _launch_fields(ranks):
    """What an MPI launcher's placeholders stand for: the nodes the dispatcher granted the
    task (FUNCX_MPI_HOSTS, set when it asked for nodes), else this machine alone."""
    hosts = _granted_hosts()
    per_node = -(-ranks // len(hosts))  # ceiling: every rank has a node
    return {
        "{ranks}": str(ranks),
        "{nodes}": str(len(hosts)),
        "{hosts}": ",".join(hosts),
        "{ranks_per_node}": str(per_node),
        "{host_slots}": _host_slots(hosts, per_node),
    }


def _fill_launcher(part, fields):
    for field, value in fields.items():
        part = part.replace(field, value)
    return part


def run_shell(*args, **kwargs):
    config = _CONFIG
    ranks = None
    if config.get("mpi") is not None:
        # An MPI function takes its rank count from the call (ranks=N) or its own default.
        ranks = kwargs.pop("ranks", None)
        if ranks is None:
            ranks = config["mpi"]["ranks"]
        if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
            raise ValueError("ranks must be a positive integer, not %r" % (ranks,))
    command = _Quoting().vformat(config["command"], args, kwargs)
    if ranks is not None:
        fields = _launch_fields(ranks)
        launcher = [_fill_launcher(part, fields) for part in config["mpi"]["launcher"]]
        command = " ".join(_shlex.quote(part) for part in launcher) + " " + command

    sandbox = _new_sandbox("task-", config.get("sandbox_root"))

    env = dict(_os.environ)
    env.update(config.get("env") or {})
    env["FUNCX_SANDBOX"] = sandbox
    if ranks is not None:
        env["FUNCX_MPI_RANKS"] = str(ranks)
        if _os.getuid() == 0:
            # Open MPI's mpirun refuses root without these; other launchers ignore them.
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")

    keep = config["snippet_lines"]
    max_line = config["max_line_bytes"]
    walltime = config.get("walltime")
    started = _time.monotonic()
    process = _subprocess.Popen(
        command,
        shell=True,
        cwd=sandbox,
        env=env,
        stdin=_subprocess.DEVNULL,
        stdout=_subprocess.PIPE,
        stderr=_subprocess.PIPE,
        # Its own session and process group: the walltime kills everything the command
        # started, and a signal meant for the command never reaches the worker.
        start_new_session=True,
        preexec_fn=_die_with_worker(),
    )
    outputs = ({}, {})
    readers = [
        _threading.Thread(target=_tail, args=(stream, keep, max_line, into), daemon=True)
        for stream, into in zip((process.stdout, process.stderr), outputs)
    ]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        returncode = process.wait(timeout=walltime)
    except _subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process.pid)
        process.wait()
        returncode = 124
    except BaseException:
        _kill_group(process.pid)
        process.wait()
        raise
    finally:
        # Whatever the command left running in its group goes with it: it would otherwise
        # hold the output pipes open and outlive its task.
        _kill_group(process.pid)
    for reader in readers:
        reader.join()
    process.stdout.close()
    process.stderr.close()
    seconds = _time.monotonic() - started

    kept = bool(config.get("keep_sandbox"))
    if not kept:
        _shutil.rmtree(sandbox, ignore_errors=True)
    out, err = outputs
    result = {
        "returncode": returncode,
        "stdout": out.get("text", ""),
        "stderr": err.get("text", ""),
        "stdout_lines": out.get("lines", 0),
        "stderr_lines": err.get("lines", 0),
        "stdout_truncated": out.get("truncated", False),
        "stderr_truncated": err.get("truncated", False),
        "timed_out": timed_out,
        "command": command,
        "sandbox": sandbox if kept else None,
        "seconds": seconds,
    }
    if config.get("fail_on_error") and returncode != 0:
        what = "timed out after %ss" % walltime if timed_out else "exited with %d" % returncode
        raise ShellCommandFailed(
            "%s %s; last lines of stderr:\n%s" % (command, what, result["stderr"])
        )
    return result
