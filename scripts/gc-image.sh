#!/usr/bin/env bash
# gc-image.sh VENV - a container image for tests/globus_compute's per-task containers
# (`user_endpoint_config={"container_uri": ...}`): localhost/funcx-python:latest (from
# scripts/infra/podman-up.sh) plus VENV (from scripts/gc-venv.sh) at the same absolute path,
# so that the endpoint's `--python VENV/bin/python` is, inside the image too, a Python with
# globus-compute-sdk. Its interpreter is the image's /usr/bin/python3.11 (the same minor
# version as the venv's), with the shared libraries the venv's extension modules need.
# /funcx-gc-image holds the image's name, for the tests to check where a task ran.
# Reused when present (the tag is a hash of VENV's path and pinned packages); prints its name.
# No registry: FROM a local image, COPY only, nothing runs at build time.
set -euo pipefail
venv="$(cd "${1:?usage: gc-image.sh VENV}" && pwd)"
base=localhost/funcx-python:latest
tag="$(printf '%s\n%s' "$venv" "$(cat "$venv/.funcx-gc-venv" 2>/dev/null)" | sha256sum | cut -c1-12)"
image="localhost/funcx-gc-sdk:$tag"
if podman image exists "$image"; then
    echo "$image"
    exit 0
fi
podman image exists "$base" || { echo "gc-image.sh: $base is missing: run scripts/infra/podman-up.sh" >&2; exit 1; }
context="$(mktemp -d /tmp/funcx-gc-image.XXXXXX)"
trap 'rm -rf "$context"' EXIT
root="$context/root"
site="lib/python3.11/site-packages"
install -d "$root$venv/bin" "$root$venv/lib/python3.11"
ln -s /usr/bin/python3.11 "$root$venv/bin/python"
printf 'home = /usr/bin\ninclude-system-site-packages = false\n' > "$root$venv/pyvenv.cfg"
cp -a "$venv/$site" "$root$venv/lib/python3.11/"
# The libraries the extension modules link to, the venv's and the standard library's (the
# base image has the interpreter's own only): libgcc_s for cryptography's Rust, libssl, ...
find "$venv/$site" /usr/lib/python3.11/lib-dynload -name '*.so' -print0 \
    | xargs -0 -r ldd 2>/dev/null \
    | grep -oE '=> /[^ ]+' | cut -c4- | sort -u \
    | while read -r lib; do cp -L --parents "$lib" "$root/"; done
printf '%s\n' "$image" > "$root/funcx-gc-image"
printf 'FROM %s\nCOPY root/ /\n' "$base" > "$context/Containerfile"
podman build -q --pull=never -t "$image" "$context" >/dev/null
echo "$image"
