#!/usr/bin/env bash
# moto-up.sh - moto's AWS emulator (moto_server) on 127.0.0.1:${MOTO_PORT:-5001},
# in the background. EC2 (RunInstances, DescribeInstances, TerminateInstances,
# ...) is emulated as API state only: nothing boots, no process runs for an
# "instance", and its IPs are fake. State is in memory.
# moto_server comes from the python3 on PATH when it has moto[server] (some
# machine images do); otherwise it is installed once into a virtualenv,
# /opt/funcx-infra/moto (~1 min; Debian's python3 refuses system-wide pip).
# Clients: endpoint http://127.0.0.1:$MOTO_PORT, any dummy credentials and
# region (AWS_ACCESS_KEY_ID=testing, AWS_DEFAULT_REGION=us-east-1).
set -euo pipefail
INFRA_TAG=moto-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
require_tools
PORT="${MOTO_PORT:-5001}"  # not 5000: the Globus Compute SDK tests need it
VENV=/opt/funcx-infra/moto
RUNDIR=/run/moto
PIDF=$RUNDIR/moto-$PORT.pid
LOGF=/var/log/moto-$PORT.log
URL="http://127.0.0.1:$PORT"

# The root page is cheap; /moto-api/data.json dumps the whole emulator state (megabytes
# after a few test runs, seconds to answer).
up() { curl -fsS -o /dev/null --max-time 10 "$URL/" 2>/dev/null; }

if command -v moto_server >/dev/null && python3 -c 'import moto, flask, flask_cors' 2>/dev/null; then
  MOTO_BIN="$(command -v moto_server)"
else
  # .complete marks a finished install: an interrupted one is redone.
  if [ ! -e "$VENV/.complete" ]; then
    log "installing moto[server] into $VENV"
    rm -rf "$VENV"
    # Debian's python3 has no ensurepip until python3-venv is installed.
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    "$VENV/bin/pip" install -q 'moto[server]>=5,<6' || die "pip install 'moto[server]' failed"
    touch "$VENV/.complete"
  fi
  MOTO_BIN="$VENV/bin/moto_server"
fi

install -d "$RUNDIR"
if pid_alive "$PIDF" && up; then
  log "moto_server already running on $URL (pid $(cat "$PIDF"))"
elif up; then
  # Started by another checkout's script (its own pid file elsewhere): same server.
  log "a moto server already answers on $URL"
else
  rm -f "$PIDF"
  if listeners_on_port "$PORT" | grep -q .; then
    die "port $PORT is taken by something else: $(ss -Hltnp "sport = :$PORT" | head -1)"
  fi
  log "starting $MOTO_BIN on $URL (log $LOGF)"
  nohup setsid "$MOTO_BIN" -H 127.0.0.1 -p "$PORT" >"$LOGF" 2>&1 </dev/null &
  echo $! > "$PIDF"
  wait_until 30 moto up || die "moto_server did not answer on $URL within 30 s; tail of $LOGF:
$(tail -n 20 "$LOGF")"
fi
log "moto is up: $URL"
log_elapsed
