#!/usr/bin/env bash
# benches/globus_compute.sh - the Globus Compute SDK's Executor against a funcx gateway:
# 1,000 tasks (tasks/s) and one-at-a-time round trips (p50, p99). Needs RabbitMQ
# (scripts/infra/rabbitmq-up.sh) and port 5000 free. Env: TASKS, ROUND_TRIPS, WORKERS (2),
# LISTEN (where the gateway listens; default 127.0.0.1:5000, what `localhost:5000` names).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/gc-venv.sh)
cargo build --release --example globus_compute
out=$(mktemp)
target/release/examples/globus_compute --python "$python" --workers "${WORKERS:-2}" \
    --listen "${LISTEN:-127.0.0.1:5000}" > "$out" &
gateway=$!
trap 'kill "$gateway" 2>/dev/null; wait "$gateway" 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 600); do
    grep -q '^FUNCX_GATEWAY_TOKEN=' "$out" && break
    kill -0 "$gateway" || { echo "the gateway exited" >&2; exit 1; }
    sleep 0.1
done
set -a
# shellcheck disable=SC1090
. <(grep -E '^(GC_ENDPOINT_ID|GLOBUS_COMPUTE_CLIENT_ID|GLOBUS_COMPUTE_CLIENT_SECRET)=' "$out")
set +a
export GLOBUS_SDK_ENVIRONMENT=local GLOBUS_SDK_SERVICE_URL_AUTH=http://localhost:5000/
GLOBUS_COMPUTE_USER_DIR=$(mktemp -d)
export GLOBUS_COMPUTE_USER_DIR
"$python" benches/globus_compute.py
