#!/usr/bin/env bash
# postgres-down.sh - stop the PostgreSQL cluster started by postgres-up.sh (data kept).
set -euo pipefail
INFRA_TAG=postgres-down
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
VER=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
[ -n "$VER" ] || { log "no PostgreSQL cluster"; exit 0; }
pg_ctlcluster "$VER" main stop -m fast 2>/dev/null || true
log "stopped $VER/main"
