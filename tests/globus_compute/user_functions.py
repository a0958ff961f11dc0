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
