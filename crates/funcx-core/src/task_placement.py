# Where a task runs, as funcx's shell functions (shell.py) and the Globus Compute shim both
# need it: the nodes the dispatcher granted it and a sandbox directory of its own. Standard
# library only; put in front of each one's source (TASK_PLACEMENT_PY in shell.rs).
import os as _os
import socket as _socket
import tempfile as _tempfile


def _granted_hosts():
    """The hosts of the nodes the dispatcher granted the task (FUNCX_MPI_HOSTS, set when it
    asked for nodes), else this machine alone."""
    hosts = [h for h in _os.environ.get("FUNCX_MPI_HOSTS", "").split(",") if h]
    return hosts or [_socket.gethostname()]


def _host_slots(hosts, per_node):
    """`host:N` for each host, comma-separated: Open MPI's --host with N slots each."""
    return ",".join("%s:%d" % (host, per_node) for host in hosts)


def _new_sandbox(prefix, root=None):
    """A fresh directory for one task, under `root`, else FUNCX_SANDBOX_ROOT, else the
    temporary directory's funcx-sandbox."""
    root = root or _os.environ.get("FUNCX_SANDBOX_ROOT") or _os.path.join(
        _tempfile.gettempdir(), "funcx-sandbox"
    )
    _os.makedirs(root, exist_ok=True)
    return _tempfile.mkdtemp(prefix=prefix, dir=root)
