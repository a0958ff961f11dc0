# Shared helpers for scripts/infra/*.sh. Source it, do not run it.
# shellcheck shell=bash
#
# Every script that sources this is idempotent, runs as root, binds only to
# loopback, logs "[name HH:MM:SS] ..." lines and exits non-zero with an
# "ERROR: ..." line when something is wrong.

INFRA_TAG="${INFRA_TAG:-infra}"
# Where the scripts live (for bind-loopback.c and for scripts that call others).
INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
INFRA_T0=$(date +%s.%N)

log()  { printf '[%s %s] %s\n' "$INFRA_TAG" "$(date +%H:%M:%S)" "$*"; }
warn() { printf '[%s %s] WARNING: %s\n' "$INFRA_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[%s %s] ERROR: %s\n' "$INFRA_TAG" "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# log_elapsed: the seconds since this script sourced _common.sh (awk, not bc:
# bc is not on a minimal Debian).
log_elapsed() {
  log "elapsed $(awk -v a="$INFRA_T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
}

require_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (uid 0); got uid $(id -u)"
}

# pid1_is_systemd: packaged units must then be stopped, because these scripts
# run the daemons themselves (with their own configuration).
pid1_is_systemd() {
  [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]
}

# pkg_installed NAME -> 0 if the Debian package is fully installed
pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# apt_install PKG... : installs only the missing packages, non-interactively,
# without starting services (the scripts start the daemons themselves).
# Concurrent runs (several checkouts on one machine) wait for dpkg's lock.
apt_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # An update is cheap (~1-2 s) and avoids 404s from stale package lists.
  apt-get -o DPkg::Lock::Timeout=300 update -qq || die "apt-get update failed"
  # policy-rc.d exiting 101 keeps the packages' postinst scripts from
  # starting services with the packaged configuration.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0 alog
  alog="$(mktemp /tmp/infra-apt.XXXXXX.log)"
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >"$alog" 2>&1 || rc=$?
  [ "$made_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed (rc=$rc); last lines of $alog:
$(tail -n 20 "$alog")"
  rm -f "$alog"
  log "installed: ${missing[*]}"
}

# require_tools: the few programs the scripts use that a minimal Debian image
# (a CI container) may lack: ps, ss, curl, hostname.
require_tools() {
  local want=()
  command -v ps >/dev/null || want+=(procps)
  command -v ss >/dev/null || want+=(iproute2)
  command -v curl >/dev/null || want+=(curl ca-certificates)
  command -v hostname >/dev/null || want+=(hostname)
  [ "${#want[@]}" -eq 0 ] || apt_install "${want[@]}"
}

# node_name: this host's short name, made to resolve to loopback. Slurm and
# Grid Engine identify the node by name and must find it on 127.0.0.1; a CI
# container's name usually resolves to its external address, so a line
# "127.0.0.1 NAME" is added to /etc/hosts (once) when it does not.
node_name() {
  local name
  name="$(hostname -s 2>/dev/null || true)"
  name="${name:-localhost}"
  if ! getent hosts "$name" | grep -qE '^(127\.|::1)'; then
    if [ -w /etc/hosts ] && ! grep -qE "^127\.0\.0\.1[[:space:]].*\b$name\b" /etc/hosts; then
      printf '127.0.0.1 %s\n' "$name" >> /etc/hosts
      warn "added '127.0.0.1 $name' to /etc/hosts (the host name must resolve to loopback)"
    fi
    getent hosts "$name" | grep -qE '^(127\.|::1)' || name=localhost
  fi
  echo "$name"
}

# pid_alive PIDFILE -> 0 if the pid in the file is a live process
pid_alive() {
  local f="$1" pid
  [ -s "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# wait_until TIMEOUT_S DESCRIPTION CMD... : polls CMD every 0.5 s
wait_until() {
  local timeout="$1"; shift 2  # $2: description, for the reader
  local deadline=$(( $(date +%s) + timeout ))
  while ! "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.5
  done
  return 0
}

# stop_pidfile NAME PIDFILE [TIMEOUT_S]: TERM, wait, then KILL the one pid.
stop_pidfile() {
  local name="$1" f="$2" timeout="${3:-20}" pid i
  if ! pid_alive "$f"; then
    log "$name: not running"
    rm -f "$f"
    return 0
  fi
  pid="$(cat "$f")"
  log "$name: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 2; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name: pid $pid still alive after ${timeout}s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$f"
  log "$name: stopped"
}

# listeners_on_port PORT -> prints listening sockets on that TCP port
listeners_on_port() {
  ss -Hltn "sport = :$1" 2>/dev/null
}

# build_bind_shim: compile bind-loopback.c (next to this file) into
# /usr/local/lib/infra/bind-loopback.so if missing or stale; prints its path.
# LD_PRELOAD it into daemons that cannot be told to listen on 127.0.0.1 only.
INFRA_SHIM=/usr/local/lib/infra/bind-loopback.so
build_bind_shim() {
  local src="$INFRA_DIR/bind-loopback.c"
  [ -f "$src" ] || die "missing $src"
  if [ ! -f "$INFRA_SHIM" ] || ! cmp -s "$src" "$INFRA_SHIM.c"; then
    command -v gcc >/dev/null || apt_install gcc libc6-dev
    install -d "$(dirname "$INFRA_SHIM")"
    # Build beside and rename: a daemon starting meanwhile never maps half a file.
    gcc -shared -fPIC -O2 -o "$INFRA_SHIM.new" "$src" -ldl >&2 || die "compiling $src failed"
    mv -f "$INFRA_SHIM.new" "$INFRA_SHIM"
    cp "$src" "$INFRA_SHIM.c"
    log "built $INFRA_SHIM" >&2
  fi
  echo "$INFRA_SHIM"
}
