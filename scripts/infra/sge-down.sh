#!/usr/bin/env bash
# sge-down.sh - delete all jobs and stop the Grid Engine started by sge-up.sh
# (execd, then qmaster; qmaster takes ~10 s to exit). The spool is kept. Idempotent.
set -euo pipefail
INFRA_TAG=sge-down
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
SPOOL=/var/spool/gridengine
QM_PID=$SPOOL/qmaster/qmaster.pid
if command -v qconf >/dev/null && pid_alive "$QM_PID" && timeout 10 qconf -sh >/dev/null 2>&1; then
  qdel -f -u '*' >/dev/null 2>&1 || true
  qconf -ke all >/dev/null 2>&1 || true
fi
for ef in "$SPOOL"/execd/*/execd.pid; do
  [ -e "$ef" ] && stop_pidfile sge_execd "$ef" 30
done
pid_alive "$QM_PID" && { timeout 10 qconf -km >/dev/null 2>&1 || true; }
stop_pidfile sge_qmaster "$QM_PID" 30
log "Grid Engine is down"
