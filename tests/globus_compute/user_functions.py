"""What a user's script defines. The tests load this file as `__main__` (runpy), as a
script's functions are: dill then ships them by value, not as a reference to a module the
workers could not import."""


def square(x):
    return x * x


def describe(a, b=0, *, label="sum", scale=1):
    return f"{label}={(a + b) * scale}"


def divide(a, b):
    return a / b


def slow_double(x, seconds):
    import time

    time.sleep(seconds)
    return 2 * x


def worker_state():
    """What a previous task could have left behind in its worker: its working directory
    and any launch or sandbox variable."""
    import os

    return {
        "cwd": os.getcwd(),
        "leftovers": sorted(
            name
            for name in os.environ
            if name.startswith("PARSL_") or name == "GC_TASK_SANDBOX_DIR"
        ),
    }


def container_image():
    """The image this task ran in, as scripts/gc-image.sh marks it (None outside one)."""
    import os

    if not os.path.exists("/funcx-gc-image"):
        return None
    with open("/funcx-gc-image") as marker:
        return marker.read().strip()
