#!/usr/bin/env bash
# moto-down.sh - stop the moto_server started by moto-up.sh (its state is lost).
set -euo pipefail
INFRA_TAG=moto-down
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
PORT="${MOTO_PORT:-5000}"
stop_pidfile "moto_server:$PORT" "/run/moto/moto-$PORT.pid" 10
