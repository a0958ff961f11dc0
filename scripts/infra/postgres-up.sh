#!/usr/bin/env bash
# postgres-up.sh - PostgreSQL 15 (Debian 12) on 127.0.0.1:${PGPORT:-5432}, without systemd.
#   Cluster 15/main (created by the package), listen_addresses = '127.0.0.1' only.
#   A role and a database for tests: ${PG_TEST_USER:-funcx} / ${PG_TEST_DB:-funcx},
#   password ${PG_TEST_PASSWORD:-funcx}, password auth over TCP from 127.0.0.1:
#   postgres://funcx:funcx@127.0.0.1:5432/funcx
# Not started by scripts/test yet: for the tests that will need a database.
# Idempotent; ends with a TCP query as the test role.
set -euo pipefail
INFRA_TAG=postgres-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
PORT="${PGPORT:-5432}"; U="${PG_TEST_USER:-funcx}"; DB="${PG_TEST_DB:-funcx}"; PW="${PG_TEST_PASSWORD:-funcx}"

apt_install postgresql
if pid1_is_systemd; then
  systemctl stop postgresql >/dev/null 2>&1 || true
fi
VER=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
[ -n "$VER" ] || die "no cluster under /etc/postgresql after installing postgresql"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$VER main$"; then
  log "creating cluster $VER/main"
  pg_createcluster "$VER" main >/dev/null
fi
CONF=/etc/postgresql/$VER/main/postgresql.conf
# Loopback only, on the chosen port; a changed setting needs a restart.
before="$(cksum < "$CONF")"
sed -i -E "s/^#?listen_addresses\s*=.*/listen_addresses = '127.0.0.1'/" "$CONF"
sed -i -E "s/^#?port\s*=.*/port = $PORT/" "$CONF"
status="$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $4}')"
if [ "$status" = online ] && [ "$before" != "$(cksum < "$CONF")" ]; then
  log "configuration changed: restarting cluster $VER/main"
  pg_ctlcluster "$VER" main restart
elif [ "$status" != online ]; then
  log "starting cluster $VER/main on 127.0.0.1:$PORT"
  pg_ctlcluster "$VER" main start
fi
wait_until 30 "PostgreSQL accepting connections" runuser -u postgres -- pg_isready -q -h 127.0.0.1 -p "$PORT" \
  || die "PostgreSQL did not accept connections on 127.0.0.1:$PORT within 30 s"
psql_admin() { runuser -u postgres -- psql -q -p "$PORT" -tAc "$1"; }
psql_admin "SELECT 1 FROM pg_roles WHERE rolname='$U'" | grep -q 1 \
  || psql_admin "CREATE ROLE $U LOGIN PASSWORD '$PW' CREATEDB" >/dev/null
psql_admin "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1 \
  || psql_admin "CREATE DATABASE $DB OWNER $U" >/dev/null
got=$(PGPASSWORD="$PW" psql -h 127.0.0.1 -p "$PORT" -U "$U" -d "$DB" -tAc 'SELECT 40 + 2')
[ "$got" = 42 ] || die "test query as $U returned '$got'"
log "PostgreSQL $VER is up: postgres://$U:$PW@127.0.0.1:$PORT/$DB"
log_elapsed
