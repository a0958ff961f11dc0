# The shim: how a Globus Compute task runs on a funcx worker (see shim.rs). Standard library
# only, besides the globus_compute_sdk it deserializes with. shim.rs puts funcx-core's
# TASK_PLACEMENT_PY (_granted_hosts, _host_slots, _new_sandbox) in front of this text.
import json as _json
import os as _os
import shutil as _shutil
import traceback as _traceback

_FUNCTIONS = {}
_STATE = {}


def _details():
    details = _STATE.get("details")
    if details is None:
        try:
            from globus_compute_sdk.sdk.utils import get_env_details
            details = get_env_details()
        except Exception:
            import platform
            details = {"os": platform.platform(), "python_version": platform.python_version()}
        details = _STATE["details"] = _json.dumps(details)
    return details


def _failure(error, skip_frames):
    tb = error.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(_traceback.format_exception(type(error), error, tb))
    return ("failed", text, _details())


def _mpi_environment(spec):
    """What Parsl's MPI engine sets for a task with resource specification `spec` (a dict
    the gateway checked): the hosts of the nodes the task was granted (FUNCX_MPI_HOSTS; this
    machine alone when it asked for none), the counts, and PARSL_MPI_PREFIX, the launch
    prefix of the endpoint's launcher (FUNCX_MPI_LAUNCHER: mpirun, Open MPI's and the
    default; mpiexec, MPICH's Hydra; srun)."""
    hosts = _granted_hosts()
    nodes = len(hosts)
    ranks = spec.get("num_ranks")
    per_node = spec.get("ranks_per_node")
    if per_node is None:
        per_node = -(-ranks // nodes) if ranks else 1  # ceiling: every rank has a slot
    if ranks is None:
        ranks = per_node * nodes
    node_list = ",".join(hosts)
    launcher = _os.environ.get("FUNCX_MPI_LAUNCHER") or "mpirun"
    env = {}
    if launcher == "mpirun":
        prefix = "mpirun -n %d --host %s" % (ranks, _host_slots(hosts, per_node))
        if _os.getuid() == 0:
            # Open MPI's mpirun refuses root without these.
            env["OMPI_ALLOW_RUN_AS_ROOT"] = _os.environ.get("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = _os.environ.get(
                "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"
            )
    elif launcher == "mpiexec":
        prefix = "mpiexec -n %d -ppn %d -hosts %s" % (ranks, per_node, node_list)
    elif launcher == "srun":
        prefix = "srun --ntasks %d --ntasks-per-node %d --nodelist %s --nodes %d" % (
            ranks, per_node, node_list, nodes
        )
    else:
        raise ValueError(
            "FUNCX_MPI_LAUNCHER must be mpirun, mpiexec or srun, not %r" % (launcher,)
        )
    if spec.get("launcher_options"):
        prefix += " " + spec["launcher_options"]
    env.update(
        PARSL_MPI_PREFIX=prefix,
        PARSL_MPI_NODELIST=node_list,
        PARSL_NUM_NODES=str(nodes),
        PARSL_RANKS_PER_NODE=str(per_node),
        PARSL_NUM_RANKS=str(ranks),
    )
    return env


def _sandbox():
    """A fresh directory for one shell task (GC_TASK_SANDBOX_DIR, where a ShellFunction
    runs its command and keeps its output files), under FUNCX_SANDBOX_ROOT or the temporary
    directory, as funcx's own shell tasks have."""
    return _new_sandbox("gc-task-")


def _set_env(env):
    """Sets `env` in os.environ; returns what it replaced (None: was unset)."""
    saved = {name: _os.environ.get(name) for name in env}
    _os.environ.update(env)
    return saved


def _restore(saved, cwd, sandbox):
    """Undoes what a call changed of the worker: the variables set for it, the directory a
    ShellFunction moved to, and the sandbox it ran in."""
    for name, value in saved.items():
        if value is None:
            _os.environ.pop(name, None)
        else:
            _os.environ[name] = value
    try:
        if _os.getcwd() != cwd:
            _os.chdir(cwd)
    except OSError:
        _os.chdir(cwd)
    if sandbox is not None:
        _shutil.rmtree(sandbox, ignore_errors=True)


def _funcx_globus_compute_task(
    function_code, payload, result_serializers, resource_specification=None
):
    try:
        serializer = _STATE.get("serializer")
        if serializer is None:
            try:
                from globus_compute_sdk.serialize import ComputeSerializer
            except ImportError as error:
                raise RuntimeError(
                    "this worker's Python cannot import globus_compute_sdk; install it "
                    "(pip install globus-compute-sdk) in the interpreter the endpoint's "
                    "workers run"
                ) from error
            serializer = _STATE["serializer"] = ComputeSerializer()
        from globus_compute_sdk.serialize.utils import unpack_buffers

        function = _FUNCTIONS.get(function_code)
        if function is None:
            (buffer,) = unpack_buffers(function_code)
            function = serializer.deserialize(buffer)
            if len(_FUNCTIONS) >= 256:
                _FUNCTIONS.clear()
            _FUNCTIONS[function_code] = function
        args_buffer, kwargs_buffer = unpack_buffers(payload)
        args = serializer.deserialize(args_buffer)
        kwargs = serializer.deserialize(kwargs_buffer)
        env = {}
        if resource_specification is not None:
            env.update(_mpi_environment(_json.loads(resource_specification)))
        # A ShellFunction (MPIFunction too) runs its command in GC_TASK_SANDBOX_DIR.
        sandbox = _sandbox() if hasattr(function, "execute_cmd_line") else None
        if sandbox is not None:
            env["GC_TASK_SANDBOX_DIR"] = sandbox
        cwd = _os.getcwd()
        saved = _set_env(env)
    except Exception as error:
        return _failure(error, 0)
    try:
        result = function(*args, **kwargs)
    except Exception as error:
        # The user's frames only: not this one.
        return _failure(error, 1)
    finally:
        _restore(saved, cwd, sandbox)
    try:
        data = serializer.serialize_from_list(result, list(result_serializers))
    except Exception as error:
        return _failure(error, 0)
    return ("success", data, _details())
