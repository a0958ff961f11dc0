#!/usr/bin/env bash
# gc-venv.sh [DIR] - a Python virtual environment with the Globus Compute SDK and pytest, for
# tests/globus_compute (the SDK's own tests against a funcx gateway) and the benchmark.
# Reused when it is already there with the pinned versions; prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-${FUNCX_GC_VENV:-target/gc-venv}}"
# Absolute, so that the python it prints names the same file from any directory: the tests
# pass it as the workers' `--python`, and a container worker runs it from the image's root.
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
# The SDK version the gateway was checked against (4.19.0, see the README); pika comes with it.
want=(globus-compute-sdk==4.19.0 pytest==8.3.5)
stamp="$venv/.funcx-gc-venv"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${want[*]}" ]; then
    echo "$venv/bin/python"
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian splits venv (and ensurepip) out of python3.
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install -q --disable-pip-version-check "${want[@]}" >&2
printf '%s' "${want[*]}" > "$stamp"
echo "$venv/bin/python"
