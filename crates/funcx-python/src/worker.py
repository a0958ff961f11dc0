# The funcx Python worker: runs functions sent by the Rust side over a pipe.
#
# Started as `python -u -c <this file> <max_result_size> [<pid> <probe fd> <nonce>]`, the
# last three when the Rust process (pid) lends large payloads in shared files. Standard
# library only, Python 3.8+. The wire protocol is described in protocol.rs; every integer is
# little-endian and every frame is `u32 body_len | u8 kind | body`.
#
# This is the hot path of funcx: a no-op task must cost a couple of microseconds,
# so the task loop keeps everything in locals, parses with precompiled structs on a
# memoryview (no slicing copies) and batches results into one write.

import mmap
import os
import sys
import struct
import pickle
import select
from time import perf_counter_ns

# Rust -> worker frame kinds.
K_FUNCTION = 1
K_TASKS = 2
K_CANCEL = 3
K_SHUTDOWN = 4

# Worker -> Rust frame kinds.
K_READY = 1
K_RESULTS = 2
K_STARTED = 3

# Result statuses.
S_OK = 0
S_EXCEPTION = 1
S_LOAD_ERROR = 2
S_ARGS_ERROR = 3
S_RESULT_ERROR = 4
S_TOO_LARGE = 5
S_CANCELLED = 6
S_UNKNOWN_FUNCTION = 7
S_OK_JSON = 8
S_OK_SHARED = 9

# Task flags.
F_ISOLATE = 1
F_REJECTED = 2
# The task's arguments are JSON text and its result goes back as JSON.
F_JSON = 4
# The task carries environment variables (its GPUs), set while it runs.
F_ENV = 8
# The task's arguments are in a shared file of the Rust process (see shared.rs), and its
# large result goes back in it.
F_SHARED = 16

# Function forms.
FORM_SOURCE = 0
FORM_PICKLED = 1
FORM_REJECTED = 2

FRAME_HDR = struct.Struct("<IB")
RESULTS_HDR = struct.Struct("<IBI")
RESULT_HDR = struct.Struct("<QBQI")
TASK_HDR = struct.Struct("<QIBHH")
FUNC_HDR = struct.Struct("<IBH")
STARTED = struct.Struct("<IBQ")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
I32 = struct.Struct("<i")

# Results are batched into one write until the batch passes this size.
FLUSH_SIZE = 256 * 1024
# Results bigger than this are written straight from their own buffer.
INLINE_RESULT = 64 * 1024
# A long-running batch still reports results and sees cancellations this often.
POLL_NS = 5_000_000
# Keeps a pathological exception message from filling a frame.
MAX_TEXT = 256 * 1024
MIN_BUFFER = 1 << 20
# A buffer up to this size is kept after its frame is handled: the next large frame is read
# into it instead of into freshly zeroed memory.
KEEP_BUFFER = 32 << 20
# How far the input buffer may grow ahead of the bytes it holds.
GROW_AHEAD = 64 << 20
# Maps a shared file's pages at once instead of faulting them in one by one.
MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
# The most buffers one pwritev takes (the kernel's IOV_MAX is 1024).
IOV_BATCH = 512


class ProtocolError(Exception):
    pass


class Parts(list):
    """A pickle as the pieces a Pickler wrote into it: a large bytes object in the value
    comes through as itself instead of being copied into one output buffer."""

    write = list.append


def json_codec():
    """`(loads, dumps)` for JSON tasks. json is imported on first use: a worker that only
    sees pickles never pays its import time."""
    global JSON_CODEC
    if JSON_CODEC is not None:
        return JSON_CODEC
    import json

    decode = json.loads
    encode = json.JSONEncoder(
        ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode

    def loads(view):
        return decode(bytes(view))

    def dumps(value, _protocol):
        # NaN and infinities are refused (allow_nan=False): they are not JSON, and
        # no other language could read them back.
        return encode(value).encode("utf-8")

    JSON_CODEC = (loads, dumps)
    return JSON_CODEC


JSON_CODEC = None


def write_all(fd, data):
    # A pipe write can be partial (signals, huge buffers); the protocol cannot be.
    n = os.write(fd, data)
    size = len(data)
    if n < size:
        with memoryview(data) as view:
            while n < size:
                n += os.write(fd, view[n:])


def writev_all(fd, parts):
    total = 0
    for part in parts:
        total += len(part)
    n = os.writev(fd, parts)
    if n == total:
        return
    for part in parts:
        size = len(part)
        if n >= size:
            n -= size
            continue
        with memoryview(part) as view:
            write_all(fd, view[n:])
        n = 0


def pwritev_all(fd, parts):
    """Writes `parts` one after the other into file `fd` from offset 0."""
    at = 0
    for start in range(0, len(parts), IOV_BATCH):
        batch = parts[start : start + IOV_BATCH]
        total = 0
        for part in batch:
            total += len(part)
        n = os.pwritev(fd, batch, at)
        if n < total:
            # Short writes are rare (signals); finish the batch piece by piece.
            for part in batch:
                with memoryview(part) as view:
                    done = max(0, min(len(view), n))
                    n -= len(view)
                    while done < len(view):
                        done += os.pwrite(fd, view[done:], at + done)
                at += len(part)
        else:
            at += total
    return at


def shared_probe(argv):
    """The Rust process's pid when this worker can open its shared files: the probe file it
    named (`<pid> <fd> <nonce>` in argv) reads `funcx-shared <pid> <nonce>`. Otherwise (no
    probe, another /proc, no permission) None, and everything goes through the pipes."""
    try:
        pid, fd, nonce = int(argv[2]), int(argv[3]), int(argv[4])
        with open(shared_path(pid, fd), "rb") as probe:
            if probe.read(64) == b"funcx-shared %d %d" % (pid, nonce):
                return pid
    except (IndexError, ValueError, OSError):
        pass
    return None


class Lending(tuple):
    """`(fd number, sizes, keyword names)`: where a task's arguments are, in a shared file
    of the Rust process, in place of the arguments themselves until the task runs."""


def shared_path(pid, fd_num):
    return "/proc/%d/fd/%d" % (pid, fd_num)


def open_shared(pid, lending):
    """Opens the shared file of process `pid` that `lending` names, for the task's
    arguments and its result. The caller closes the descriptor once the task's result is
    written or abandoned: the file is the task's until then."""
    return os.open(shared_path(pid, lending[0]), os.O_RDWR | os.O_CLOEXEC)


def load_shared(fd, lending, loads):
    """Loads the arguments in the shared file `fd` that `lending` describes, one after the
    other from offset 0. Returns `(arg, args, kwargs)`: arg alone when there is one
    positional argument (args and kwargs None), otherwise args and kwargs."""
    _, sizes, names = lending
    total = 0
    for size in sizes:
        total += size
    if os.fstat(fd).st_size < total:
        raise ValueError("the shared file is shorter than the arguments in it")
    mapping = mmap.mmap(fd, total, MAP_FLAGS, mmap.PROT_READ)
    try:
        view = memoryview(mapping)
        values = []
        at = 0
        for size in sizes:
            part = view[at : at + size]
            values.append(loads(part))
            part.release()
            at += size
        view.release()
    finally:
        part = view = None
        try:
            mapping.close()
        except BufferError:
            # An exception's traceback still holds a view; the mapping goes with it.
            pass
    if len(sizes) == 1 and not names:
        return values[0], None, None
    npos = len(sizes) - len(names)
    return None, values[:npos], dict(zip(names, values[npos:]))


def write_shared(fd, parts):
    """Writes a result into the shared file `fd`; False when it cannot (no room): the
    result then goes through the pipe."""
    try:
        pwritev_all(fd, parts)
        return True
    except OSError:
        return False


def type_name(cls):
    module = getattr(cls, "__module__", None)
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    if module in (None, "builtins", "__main__", "__funcx__"):
        return name
    return "%s.%s" % (module, name)


def clip(text):
    if len(text) > MAX_TEXT:
        return text[:MAX_TEXT] + "\n... (%d characters cut)" % (len(text) - MAX_TEXT)
    return text


def describe(exc, skip_frames):
    """The error body of statuses 1-4 for `exc`."""
    # traceback is only imported once something fails: it costs milliseconds of
    # startup that a worker running only successful tasks never needs.
    try:
        name = type_name(type(exc))
    except BaseException:
        name = "?"
    try:
        message = str(exc)
    except BaseException:
        message = "<exception str() failed>"
    try:
        import traceback

        register_sources()
        tb = exc.__traceback__
        for _ in range(skip_frames):
            if tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:
        text = "%s: %s\n" % (name, message)
    line = -1
    if isinstance(exc, SyntaxError):
        lineno = getattr(exc, "lineno", None)
        if isinstance(lineno, int) and 0 <= lineno < 2**31:
            line = lineno
    parts = []
    for value in (name, message, text):
        data = clip(value).encode("utf-8", "replace")
        parts.append(U32.pack(len(data)))
        parts.append(data)
    parts.append(I32.pack(line))
    return b"".join(parts)


def error_body(type_name_, message, line=-1):
    parts = []
    for value in (type_name_, message, "%s: %s\n" % (type_name_, message)):
        data = value.encode("utf-8", "replace")
        parts.append(U32.pack(len(data)))
        parts.append(data)
    parts.append(I32.pack(line))
    return b"".join(parts)


# Source of every function loaded, so tracebacks and inspect show its lines.
SOURCES = {}


def register_sources():
    import linecache

    for filename, source in SOURCES.items():
        if filename not in linecache.cache:
            # An mtime of None tells linecache.checkcache never to evict the entry.
            linecache.cache[filename] = (
                len(source),
                None,
                source.splitlines(True),
                filename,
            )


def load_function(form, name, body):
    """Returns the callable, or raises with a message meant for the user."""
    if form == FORM_SOURCE:
        source = str(body, "utf-8", "replace")
        filename = "<funcx:%s>" % name
        SOURCES[filename] = source
        code = compile(source, filename, "exec")
        namespace = {"__name__": "__funcx__", "__builtins__": __builtins__}
        exec(code, namespace)
        # Lets inspect.getsource and friends see the source. linecache itself is only
        # imported when something needs it (tracebacks do): it costs milliseconds.
        if "linecache" in sys.modules:
            register_sources()
        try:
            fn = namespace[name]
        except KeyError:
            raise NameError(
                "entry point '%s' is not defined in the source" % name
            ) from None
        if not callable(fn):
            raise TypeError(
                "entry point '%s' is a %s, not a function" % (name, type_name(type(fn)))
            )
        return fn
    if form == FORM_PICKLED:
        fn = pickle.loads(body)
        if not callable(fn):
            raise TypeError(
                "pickled function '%s' unpickled to a %s, which is not callable"
                % (name, type_name(type(fn)))
            )
        return fn
    raise ProtocolError("unknown function form %d" % form)


class Worker:
    def __init__(self, proto_in, proto_out, max_result, shared_pid):
        self.fd_in = proto_in
        self.fd_out = proto_out
        self.max_result = max_result
        # The Rust process whose shared files this worker can open, or None.
        self.shared_pid = shared_pid
        self.buf = bytearray(MIN_BUFFER)
        self.view = memoryview(self.buf)
        self.pos = 0  # start of the first frame not processed yet
        self.end = 0  # end of the bytes read
        self.scan = 0  # start of the first frame not looked ahead at for CANCEL
        self.eof = False
        self.shutdown = False
        self.functions = {}
        self.failed = {}
        self.cancelled = set()
        # Cancelled ids already answered (by look_ahead): skipped without a second result.
        self.answered = set()
        # Pending RESULTS frame; its 9-byte header is filled in when flushed.
        self.out = bytearray(9)
        self.count = 0
        self.last_poll = perf_counter_ns()

    # -- output ---------------------------------------------------------------

    def flush(self):
        if not self.count:
            return
        out = self.out
        RESULTS_HDR.pack_into(out, 0, len(out) - 5, K_RESULTS, self.count)
        write_all(self.fd_out, out)
        del out[9:]
        self.count = 0

    def add_result(self, task_id, status, duration, body):
        if type(body) is Parts:
            size = 0
            for part in body:
                size += len(part)
        else:
            size = len(body)
        if size > INLINE_RESULT:
            # A big result goes out on its own, header and body in one writev,
            # without being copied into the batch.
            self.flush()
            head = RESULTS_HDR.pack(4 + RESULT_HDR.size + size, K_RESULTS, 1) + RESULT_HDR.pack(
                task_id, status, duration, size
            )
            if type(body) is Parts:
                writev_all(self.fd_out, [head] + body)
            else:
                writev_all(self.fd_out, [head, body])
            return
        if type(body) is Parts:
            body = b"".join(body)
        self.out += RESULT_HDR.pack(task_id, status, duration, size)
        self.out += body
        self.count += 1
        if len(self.out) > FLUSH_SIZE:
            self.flush()

    # -- input ----------------------------------------------------------------

    def read_some(self, blocking):
        """Reads into the free end of the buffer, never moving it (the task
        loop may hold offsets into it). Returns False if there was no room."""
        if self.eof:
            return True
        if self.end >= len(self.buf):
            return False
        if not blocking:
            ready, _, _ = select.select([self.fd_in], [], [], 0)
            if not ready:
                return True
        n = os.readv(self.fd_in, [self.view[self.end :]])
        if n == 0:
            self.eof = True
        self.end += n
        return True

    def make_room(self):
        """Between frames: makes space to read the rest of the frame at `pos`."""
        pos, end = self.pos, self.end
        have = end - pos
        size = len(self.buf)
        if have == 0:
            self.pos = self.end = self.scan = 0
            if size > KEEP_BUFFER:
                # Give back the memory of a huge frame that has been handled.
                self.view.release()
                self.buf = bytearray(MIN_BUFFER)
                self.view = memoryview(self.buf)
            return
        need = have + 65536
        if have >= 5:
            body_len, _ = FRAME_HDR.unpack_from(self.view, pos)
            # Room for the whole frame, but never more than GROW_AHEAD past what has
            # arrived: a length alone (a frame cut short, a corrupted header) must not
            # cost gigabytes of zeroed memory before its bytes exist.
            need = max(need, min(5 + body_len, max(have, size) + GROW_AHEAD))
        if pos + need <= size:
            return
        if need <= size:
            # Move the start of the frame to the front.
            self.view[0:have] = bytes(self.view[pos:end])
        else:
            old = self.view
            self.buf = bytearray(max(need, MIN_BUFFER))
            self.view = memoryview(self.buf)
            self.view[0:have] = old[pos:end]
            old.release()
        self.pos = self.scan = 0
        self.end = have

    def look_ahead(self):
        """Between tasks: reads what the pipe has without blocking and answers
        CANCEL frames at once. Every task a CANCEL names came before it on the pipe,
        so it has either run (its result is flushed here first, and a second, stray
        answer is ignored by the Rust side) or not started: then it is reported
        cancelled now and skipped silently when reached, which frees it to run on
        another worker without waiting for the tasks ahead of it here."""
        self.flush()
        self.last_poll = perf_counter_ns()
        self.read_some(False)
        view = self.view
        scan, end = self.scan, self.end
        cancelled = self.cancelled
        while end - scan >= 5:
            body_len, kind = FRAME_HDR.unpack_from(view, scan)
            frame_end = scan + 5 + body_len
            if frame_end > end:
                break
            if kind == K_CANCEL:
                for task_id in self.cancel_ids(scan + 5, frame_end):
                    if task_id not in cancelled:
                        cancelled.add(task_id)
                        self.answered.add(task_id)
                        self.add_result(task_id, S_CANCELLED, 0, b"")
            scan = frame_end
        self.scan = scan
        self.flush()

    def cancel_ids(self, off, end):
        view = self.view
        (count,) = U32.unpack_from(view, off)
        if off + 4 + 8 * count > end:
            raise ProtocolError("truncated CANCEL frame")
        return struct.unpack_from("<%dQ" % count, view, off + 4)

    # -- frames ---------------------------------------------------------------

    def run(self):
        fd_out = self.fd_out
        write_all(
            fd_out,
            self.ready_frame(),
        )
        while True:
            view = self.view
            pos, end = self.pos, self.end
            while end - pos >= 5:
                body_len, kind = FRAME_HDR.unpack_from(view, pos)
                frame_end = pos + 5 + body_len
                if frame_end > end:
                    break
                if frame_end > self.scan:
                    self.scan = frame_end
                if kind == K_TASKS:
                    self.run_tasks(pos + 5, frame_end)
                elif kind == K_FUNCTION:
                    self.define(pos + 5, frame_end)
                elif kind == K_CANCEL:
                    # Every task this frame names was received before it and has
                    # been handled by now: forget the ids.
                    ids = self.cancel_ids(pos + 5, frame_end)
                    self.cancelled.difference_update(ids)
                    self.answered.difference_update(ids)
                elif kind == K_SHUTDOWN:
                    self.flush()
                    return
                else:
                    raise ProtocolError("unknown frame kind %d" % kind)
                pos = frame_end
                self.pos = pos
                # run_tasks may have read more input.
                end = self.end
            self.pos = pos
            self.flush()
            if self.eof:
                if self.pos != self.end:
                    raise ProtocolError("input ended inside a frame")
                return
            self.make_room()
            self.read_some(True)

    def ready_frame(self):
        version = ("%s %s" % (sys.implementation.name, sys.version)).replace("\n", " ")
        data = version.encode("utf-8", "replace")[:1000]
        flags = 0 if self.shared_pid is None else 1
        body = U32.pack(os.getpid()) + U16.pack(len(data)) + data + bytes((flags,))
        return FRAME_HDR.pack(len(body), K_READY) + body

    def define(self, off, end):
        view = self.view
        key, form, name_len = FUNC_HDR.unpack_from(view, off)
        off += 7
        if off + name_len > end:
            raise ProtocolError("truncated FUNCTION frame")
        name = str(view[off : off + name_len], "utf-8", "replace")
        body = view[off + name_len : end]
        self.functions.pop(key, None)
        self.failed.pop(key, None)
        if form == FORM_REJECTED:
            self.failed[key] = error_body(
                "funcx.FunctionRejected", str(body, "utf-8", "replace")
            )
            return
        try:
            self.functions[key] = load_function(form, name, body)
        except ProtocolError:
            raise
        except BaseException as exc:
            self.failed[key] = describe(exc, 2)

    def run_tasks(self, off, end):
        view = self.view
        (count,) = U32.unpack_from(view, off)
        off += 4
        get_function = self.functions.get
        cancelled = self.cancelled
        task_hdr = TASK_HDR.unpack_from
        u32 = U32.unpack_from
        u16 = U16.unpack_from
        pickle_loads = pickle.loads
        pickle_dumps = pickle.dumps
        Pickler = pickle.Pickler
        clock = perf_counter_ns
        result_hdr = RESULT_HDR.pack
        max_result = self.max_result
        f_shared = F_SHARED
        # flush() empties this bytearray in place, so the alias stays valid.
        out = self.out
        # The descriptor of the shared file lent to the running task, open from its
        # arguments to its result and closed whatever happens in between: the manager takes
        # the file back with the task's result, and may lend it to another task next.
        lent_fd = None
        for _ in range(count):
            task_off = off
            task_id, key, flags, nargs, nkwargs = task_hdr(view, off)
            off += 17
            if flags & f_shared:
                # The frame holds only the sizes (and keyword names) of the arguments.
                (fd_num,) = u32(view, off)
                off += 4
                sizes = []
                names = []
                for _ in range(nargs):
                    (size,) = u32(view, off)
                    off += 4
                    sizes.append(size)
                for _ in range(nkwargs):
                    (size,) = u16(view, off)
                    off += 2
                    names.append(str(view[off : off + size], "utf-8", "replace"))
                    off += size
                    (size,) = u32(view, off)
                    off += 4
                    sizes.append(size)
                arg = kwargs = None
                args = Lending((fd_num, sizes, names))
                # Counted as if its arguments were in the frame: a task with large arguments
                # pickles its result into parts (below), which can go into the file.
                for size in sizes:
                    task_off -= size
            elif nargs == 1 and not nkwargs:
                (size,) = u32(view, off)
                off += 4
                arg = view[off : off + size]
                off += size
                args = kwargs = None
            else:
                arg = None
                args = []
                for _ in range(nargs):
                    (size,) = u32(view, off)
                    off += 4
                    args.append(view[off : off + size])
                    off += size
                kwargs = []
                for _ in range(nkwargs):
                    (size,) = u16(view, off)
                    off += 2
                    name = str(view[off : off + size], "utf-8", "replace")
                    off += size
                    (size,) = u32(view, off)
                    off += 4
                    kwargs.append((name, view[off : off + size]))
                    off += size
            env = None
            if flags & F_ENV:
                (n,) = u16(view, off)
                off += 2
                env = []
                for _ in range(n):
                    pair = []
                    for _ in range(2):
                        (size,) = u16(view, off)
                        off += 2
                        pair.append(str(view[off : off + size], "utf-8", "replace"))
                        off += size
                    env.append(pair)
            if off > end:
                raise ProtocolError("truncated TASKS frame")

            isolate = flags & F_ISOLATE
            if isolate:
                self.look_ahead()
            if cancelled and task_id in cancelled:
                cancelled.discard(task_id)
                if task_id in self.answered:
                    self.answered.discard(task_id)
                else:
                    self.add_result(task_id, S_CANCELLED, 0, b"")
                    if isolate:
                        self.flush()
                continue
            if isolate:
                write_all(self.fd_out, STARTED.pack(8, K_STARTED, task_id))

            start = clock()
            fn = get_function(key)
            if fn is None:
                body = self.failed.get(key)
                if body is None:
                    status, body = S_UNKNOWN_FUNCTION, U32.pack(key)
                else:
                    status = S_LOAD_ERROR
            elif flags & F_REJECTED:
                status, body = S_ARGS_ERROR, error_body(
                    "funcx.ArgumentsRejected",
                    "the arguments are too large or too many for the worker protocol, "
                "or mix data formats (pickle and JSON)",
                )
            else:
                if flags & F_JSON:
                    loads, dumps = json_codec()
                    ok = S_OK_JSON
                else:
                    loads, dumps, ok = pickle_loads, pickle_dumps, S_OK
                try:
                    if args is None:
                        arg = loads(arg)
                    elif type(args) is Lending:
                        if self.shared_pid is None:
                            raise ProtocolError("lent a shared file it cannot open")
                        lent_fd = open_shared(self.shared_pid, args)
                        arg, args, kwargs = load_shared(lent_fd, args, loads)
                    else:
                        args = [loads(a) for a in args]
                        kwargs = {name: loads(a) for name, a in kwargs}
                    # An environment the OS refuses (a NUL byte in a name or value) fails
                    # this task, not the worker.
                    saved = set_env(env) if env else None
                except BaseException as exc:
                    status, body = S_ARGS_ERROR, describe(exc, 0)
                else:
                    try:
                        if args is None:
                            result = fn(arg)
                        else:
                            result = fn(*args, **kwargs)
                    except BaseException as exc:
                        status, body = S_EXCEPTION, describe(exc, 1)
                    else:
                        try:
                            if ok == S_OK and off - task_off > INLINE_RESULT:
                                # Large arguments, likely a large result: its large bytes
                                # are written from their own memory (a Pickler costs µs).
                                body = Parts()
                                Pickler(body, 4).dump(result)
                                size = 0
                                for part in body:
                                    size += len(part)
                                if (
                                    lent_fd is not None
                                    and INLINE_RESULT < size <= max_result
                                    and write_shared(lent_fd, body)
                                ):
                                    ok, body = S_OK_SHARED, U64.pack(size)
                            else:
                                body = dumps(result, 4)
                                size = len(body)
                        except BaseException as exc:
                            status, body = S_RESULT_ERROR, describe(exc, 0)
                        else:
                            status = ok
                            if size > max_result:
                                status, body = S_TOO_LARGE, U64.pack(size)
                        result = None
                    finally:
                        if saved is not None:
                            set_env(saved)
                finally:
                    # The one test a task that was lent no file pays.
                    if lent_fd is not None:
                        os.close(lent_fd)
                        lent_fd = None
                arg = args = kwargs = None
            now = clock()
            size = len(body)
            if size <= INLINE_RESULT and not isolate and type(body) is not Parts:
                out += result_hdr(task_id, status, now - start, size)
                out += body
                self.count += 1
                if len(out) > FLUSH_SIZE:
                    self.flush()
            else:
                self.add_result(task_id, status, now - start, body)
                if isolate:
                    self.flush()
            body = None
            if now - self.last_poll > POLL_NS:
                self.look_ahead()


def set_env(pairs):
    """Sets `pairs` (name, value; value None unsets) in os.environ and returns what they
    replaced, in the same form, to restore after the task. On failure (the OS refuses a
    name or value), restores what it had set and raises."""
    saved = []
    environ = os.environ
    try:
        for name, value in pairs:
            previous = environ.get(name)
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
            saved.append((name, previous))
    except BaseException:
        # Nothing half-set outlives a refused environment.
        set_env(reversed(saved))
        raise
    return saved


def main():
    try:
        max_result = int(sys.argv[1])
    except (IndexError, ValueError):
        max_result = 1 << 30
    argv = sys.argv
    sys.argv = ["funcx-worker"]
    # The protocol gets private copies of fds 0 and 1. Then fd 1 becomes stderr, so
    # print() and C libraries writing to stdout cannot corrupt the protocol, and fd 0
    # becomes /dev/null so nothing else can eat our input.
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        sys.stdout = open(
            1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
        )
        sys.stdin = open(0, "r", closefd=False)
    except OSError:
        pass
    worker = Worker(proto_in, proto_out, max_result, shared_probe(argv))
    try:
        worker.run()
    except BrokenPipeError:
        # The Rust side is gone; nobody is left to report to.
        os._exit(1)
    except (ProtocolError, struct.error) as exc:
        sys.stderr.write("funcx worker: protocol error: %s\n" % exc)
        sys.stderr.flush()
        os._exit(2)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass


main()
