#!/usr/bin/env bash
# podman-up.sh - podman for container workers (PythonConfig::container), no registry needed:
#   * installs podman + runc (+ uidmap for rootless), and bubblewrap,
#   * drop-in /etc/containers/containers.conf.d/50-infra.conf:
#       runtime = runc   (Debian's crun 1.8.1 fails here: "crun: cgroups in
#                         hybrid mode not supported, drop all controllers from
#                         cgroupv2" - cgroup v1 + a v2 'unified' mount with hugetlb)
#       default_ulimits nofile=20000, nproc=32768  (podman's defaults are above
#                         this sandbox's hard limits and CAP_SYS_RESOURCE is
#                         missing: "error setting rlimit type 7: operation not
#                         permitted")
#   * builds a local image with python3 from a local root file system and
#     `podman import`, no pull:
#       PODMAN_ROOTFS=host (default): Debian's /usr/bin/python3.11, the libs
#           ldd lists and /usr/lib/python3.11 copied from this machine (~63 MB,
#           <2 s);
#       PODMAN_ROOTFS=debootstrap: a minbase Debian bookworm + python3-minimal
#           from the configured apt mirror (~235 MB, ~40 s).
#   * runs python3 -c 'print(1)' in it with --network none.
#   * builds two small images FROM it, localhost/funcx-image-a:latest and
#     localhost/funcx-image-b:latest, each with /etc/funcx-image holding its own
#     name (a or b): the per-function image tests (Function::in_image) check
#     that each task ran in its function's image.
# Env: PODMAN_IMAGE (default localhost/funcx-python:latest)
# Nothing listens on any port. Use --network none (the default bridge network
# works as root but creates a cni-podman0 bridge; rootless needs /dev/net/tun,
# which is root-only here, so rootless runs need --network none).
set -euo pipefail
INFRA_TAG=podman-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
T0=$(date +%s.%N)
IMAGE="${PODMAN_IMAGE:-localhost/funcx-python:latest}"
MODE="${PODMAN_ROOTFS:-host}"

# bubblewrap: the light sandbox of Container::bubblewrap (no image, no daemon).
apt_install podman runc uidmap bubblewrap
[ "$MODE" = debootstrap ] && apt_install debootstrap

DROPIN=/etc/containers/containers.conf.d/50-infra.conf
WANT='# Written by scripts/infra/podman-up.sh
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"'
install -d /etc/containers/containers.conf.d
if [ "$(cat "$DROPIN" 2>/dev/null)" != "$WANT" ]; then
  printf '%s\n' "$WANT" > "$DROPIN"; log "wrote $DROPIN (runtime runc, ulimits within this sandbox's limits)"
fi
podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null | grep -qx runc \
  || die "podman does not pick up runc from $DROPIN: $(podman info 2>&1 | tail -3)"

if podman image exists "$IMAGE"; then
  log "image $IMAGE already present"
else
  R="$(mktemp -d /tmp/podman-rootfs.XXXXXX)"
  trap 'rm -rf "$R"' EXIT
  case "$MODE" in
    host)
      PY=/usr/bin/python3.11
      [ -x "$PY" ] || apt_install python3-minimal
      log "building rootfs from this machine's $PY"
      for f in "$PY" $(ldd "$PY" | grep -oE '/[^ ]+'); do cp -L --parents "$f" "$R/"; done
      install -d "$R/usr/lib" && cp -a /usr/lib/python3.11 "$R/usr/lib/"
      ln -s python3.11 "$R/usr/bin/python3"
      install -d "$R/etc" "$R/proc" "$R/dev" "$R/sys" "$R/root"; install -d -m 1777 "$R/tmp"
      echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"; echo 'root:x:0:' > "$R/etc/group"
      ;;
    debootstrap)
      MIRROR="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
      [ -n "$MIRROR" ] || MIRROR="$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
      [ -n "$MIRROR" ] || die "cannot find the apt mirror in /etc/apt/sources.list(.d)"
      log "debootstrap minbase bookworm + python3-minimal (takes ~40 s)"
      debootstrap --variant=minbase --include=python3-minimal bookworm "$R" "$MIRROR" >/tmp/podman-debootstrap.log 2>&1 \
        || die "debootstrap failed; see /tmp/podman-debootstrap.log"
      ;;
    *) die "PODMAN_ROOTFS must be 'host' or 'debootstrap', not '$MODE'" ;;
  esac
  log "podman import -> $IMAGE ($(du -sh "$R" | cut -f1))"
  tar -C "$R" -c . | podman import -q --change 'CMD ["/usr/bin/python3"]' - "$IMAGE" >/dev/null \
    || die "podman import failed"
fi

out="$(podman run --rm --network none "$IMAGE" python3 -c 'print(1)' 2>&1)" \
  || die "podman run failed: $out"
[ "$out" = 1 ] || die "podman run printed '$out', expected 1"
log "podman run --rm --network none $IMAGE python3 -c 'print(1)' -> $out"

# Marked images for the per-function image tests: COPY only, nothing runs at build time.
for mark in a b; do
  MARKED="localhost/funcx-image-$mark:latest"
  if podman image exists "$MARKED"; then
    log "image $MARKED already present"
    continue
  fi
  C="$(mktemp -d /tmp/podman-marked.XXXXXX)"
  printf '%s\n' "$mark" > "$C/funcx-image"
  printf 'FROM %s\nCOPY funcx-image /etc/funcx-image\n' "$IMAGE" > "$C/Containerfile"
  podman build -q --pull=never -t "$MARKED" "$C" >/dev/null || { rm -rf "$C"; die "podman build of $MARKED failed"; }
  rm -rf "$C"
  got="$(podman run --rm --network none "$MARKED" python3 -c 'print(open("/etc/funcx-image").read().strip())' 2>&1)" \
    || die "podman run of $MARKED failed: $got"
  [ "$got" = "$mark" ] || die "$MARKED says '$got', expected '$mark'"
  log "built $MARKED (/etc/funcx-image: $got)"
done
log "elapsed $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
