#!/usr/bin/env bash
# rabbitmq-up.sh - RabbitMQ 3.10 (Debian 12) on 127.0.0.1, without systemd.
#   AMQP 127.0.0.1:${RABBITMQ_PORT:-5672}, Erlang distribution 127.0.0.1:25672
#   (port+20000), epmd 127.0.0.1:4369. No management plugin. Node rabbit@$(hostname -s).
#   Default user guest/guest (allowed from loopback only - RabbitMQ's default).
# Not started by scripts/test yet: for the tests that will need a broker.
# Writes /etc/rabbitmq/rabbitmq-env.conf and /etc/rabbitmq/rabbitmq.conf
# (so rabbitmqctl / rabbitmq-diagnostics from any shell find the node).
# Idempotent; verifies with rabbitmq-diagnostics ping and an AMQP handshake.
set -euo pipefail
INFRA_TAG=rabbitmq-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
require_tools
node_name >/dev/null  # the node is rabbit@$(hostname -s): it must resolve
PORT="${RABBITMQ_PORT:-5672}"
WAIT_S="${RABBITMQ_WAIT_S:-90}"

apt_install rabbitmq-server
if pid1_is_systemd; then
  systemctl stop rabbitmq-server >/dev/null 2>&1 || true
fi

ENVF=/etc/rabbitmq/rabbitmq-env.conf
CONFF=/etc/rabbitmq/rabbitmq.conf
ENV_WANT="# Written by infra/rabbitmq-up.sh: everything on loopback.
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=$PORT
export ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"
CTL_ERL_ARGS=\"-kernel inet_dist_use_interface {127,0,0,1}\""
CONF_WANT="# Written by infra/rabbitmq-up.sh
listeners.tcp.default = 127.0.0.1:$PORT
loopback_users.guest = true
log.file.level = info"
changed=0
if [ "$(cat "$ENVF" 2>/dev/null)" != "$ENV_WANT" ]; then printf '%s\n' "$ENV_WANT" > "$ENVF"; changed=1; fi
if [ "$(cat "$CONFF" 2>/dev/null)" != "$CONF_WANT" ]; then printf '%s\n' "$CONF_WANT" > "$CONFF"; changed=1; fi
[ "$changed" = 1 ] && log "wrote $ENVF and $CONFF (AMQP 127.0.0.1:$PORT)"
install -d -o rabbitmq -g rabbitmq /var/log/rabbitmq /var/lib/rabbitmq

running() { timeout 20 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

if running && [ "$changed" = 0 ]; then
  log "RabbitMQ already running ($(rabbitmqctl -q eval 'node().' 2>/dev/null))"
else
  if running; then
    log "config changed: stopping the running node first"
    rabbitmqctl -q shutdown >/dev/null 2>&1 || true
  fi
  if listeners_on_port "$PORT" | grep -q .; then
    die "port $PORT is taken by something that is not answering rabbitmq-diagnostics ping: $(ss -Hltnp "sport = :$PORT" | head -1)"
  fi
  log "starting rabbitmq-server in the background (log /var/log/rabbitmq/infra-start.log)"
  # The Debian wrapper su's to the rabbitmq user; setsid detaches it from us.
  # exec: no shell of ours lingers holding the caller's stdout (a pipe).
  ( cd /var/lib/rabbitmq && exec setsid /usr/sbin/rabbitmq-server \
      >/var/log/rabbitmq/infra-start.log 2>&1 </dev/null ) &
  log "waiting (up to ${WAIT_S}s) for the node to boot"
  if ! timeout "$WAIT_S" bash -c 'until rabbitmq-diagnostics -q check_running >/dev/null 2>&1; do sleep 1; done'; then
    die "RabbitMQ did not start within ${WAIT_S}s; tail of the logs:
$(tail -n 15 /var/log/rabbitmq/infra-start.log /var/log/rabbitmq/rabbit@*.log 2>/dev/null)"
  fi
fi

# --- verify ---------------------------------------------------------------
rabbitmq-diagnostics -q ping >/dev/null || die "rabbitmq-diagnostics ping failed"
log "rabbitmq-diagnostics ping: ok"
python3 - "$PORT" <<'EOF' || die "AMQP handshake on 127.0.0.1:$PORT failed"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"AMQP\x00\x00\x09\x01")
f = s.recv(7)
# method frame (type 1), channel 0; payload starts with class 10 method 10 = connection.start
body = s.recv(4)
assert f[0] == 1 and body[:4] == b"\x00\x0a\x00\x0a", (f, body)

EOF
log "AMQP 0-9-1 handshake: got connection.start"
log "listening: $(ss -Hltnp | grep -E 'beam|epmd' | awk '{print $4}' | sort -u | tr '\n' ' ')"
ss -Hltnp | grep -E 'beam|epmd' | awk '{print $4}' | grep -vE '^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):' \
  && warn "some RabbitMQ/epmd sockets are not on loopback (listed above)"
log "RabbitMQ is up: amqp://guest:guest@127.0.0.1:$PORT/"
log_elapsed
