#!/usr/bin/env bash
# sge-up.sh - single-node Son of Grid Engine 8.1.9 (Debian 12's gridengine-*
# packages): sge_qmaster + sge_execd on this host, queue all.q, parallel
# environment smp, root allowed to run jobs, 1-s scheduling.
#
# No systemd: the daemons are started directly. They have no listen-address
# option and bind 0.0.0.0:6444/6445, so they run with an LD_PRELOAD shim
# (bind-loopback.c, compiled here) that turns wildcard binds into 127.0.0.1.
# Env: SGE_SLOTS (default nproc), SGE_WAIT_S (default 60).
# Idempotent: with everything up it only re-checks the configuration.
set -euo pipefail
INFRA_TAG=sge-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
require_tools

NODE="$(node_name)"
SLOTS="${SGE_SLOTS:-$(nproc)}"
WAIT_S="${SGE_WAIT_S:-60}"
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
SPOOL=/var/spool/gridengine
QM_PID=$SPOOL/qmaster/qmaster.pid
CFG="$(mktemp -d /tmp/sge-up.XXXXXX)"
trap 'rm -rf "$CFG"' EXIT

# --- 1. packages (debconf preseeded: automatic cluster init, cell default) ---
if ! pkg_installed gridengine-master || ! pkg_installed gridengine-exec || ! pkg_installed gridengine-client; then
  # (pbs-slurm-up.sh unpacks slurm-wlm-torque instead of installing it: the
  # package conflicts with gridengine-client, both own /usr/bin/qsub.)
  if pkg_installed slurm-wlm-torque; then
    die "slurm-wlm-torque is installed and conflicts with gridengine-client; remove it first: apt-get remove -y slurm-wlm-torque"
  fi
  for p in gridengine-common gridengine-client gridengine-master gridengine-exec; do
    printf '%s shared/gridengineconfig boolean true\n%s shared/gridenginecell string default\n%s shared/gridenginemaster string %s\n' \
      "$p" "$p" "$p" "$NODE"
  done | debconf-set-selections
fi
apt_install gridengine-master gridengine-exec gridengine-client
[ -x /usr/lib/gridengine/sge_qmaster ] || die "/usr/lib/gridengine/sge_qmaster missing after install"

if pid1_is_systemd; then
  systemctl stop gridengine-exec gridengine-master >/dev/null 2>&1 || true
fi

# --- 2. cluster spool + host naming ----------------------------------------
if [ ! -e $SPOOL/spooldb/sge ]; then
  log "initialising cluster spool"
  install -d -o sgeadmin -g sgeadmin $SPOOL/qmaster $SPOOL/qmaster/job_scripts $SPOOL/spooldb "$COMMON"
  [ -e "$COMMON/bootstrap" ] || install -m0644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
  su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb sgeadmin" sgeadmin \
    || die "init_cluster failed"
fi
install -d -o sgeadmin -g sgeadmin $SPOOL/execd /run/gridengine
# SGE resolves 127.0.0.1 back to 'localhost' (first name in /etc/hosts) and then
# refuses clients that call themselves '$NODE': "access denied (client IP
# resolved to host name "localhost". This is not identical to clients host
# name "vm")". host_aliases makes both names one host.
if [ "$NODE" != localhost ]; then
  want="$NODE localhost"
  if [ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$want" ]; then
    echo "$want" > "$COMMON/host_aliases"; chown sgeadmin:sgeadmin "$COMMON/host_aliases"
    log "wrote $COMMON/host_aliases ($want)"
  fi
fi
[ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" = "$NODE" ] || { echo "$NODE" > "$COMMON/act_qmaster"; chown sgeadmin:sgeadmin "$COMMON/act_qmaster"; }

# --- 3. loopback shim ----------------------------------------------------------
PRELOAD="$(build_bind_shim)"
# qq CMD...: run a qconf-style command quietly (they chat on stderr); on
# failure die with what it said.
qq() { local out; out="$("$@" 2>&1)" || die "'$*' failed: $out"; }
start_daemon() { # name
  log "starting $1 (LD_PRELOAD=$PRELOAD)"
  env SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL SGE_ARCH="$($SGE_ROOT/util/arch)" \
      LD_PRELOAD="$PRELOAD" "/usr/lib/gridengine/$1"
}

# --- 4. qmaster --------------------------------------------------------------
if pid_alive "$QM_PID" && qconf -sh >/dev/null 2>&1; then
  log "sge_qmaster already running (pid $(cat $QM_PID))"
else
  rm -f "$QM_PID"
  start_daemon sge_qmaster || die "sge_qmaster failed to start; see $SPOOL/qmaster/messages"
  wait_until 30 qmaster qconf -sh \
    || die "sge_qmaster not answering 'qconf -sh'; tail of $SPOOL/qmaster/messages:
$(tail -n 15 $SPOOL/qmaster/messages 2>/dev/null)"
  log "sge_qmaster up (pid $(cat $QM_PID 2>/dev/null || echo '?'))"
fi

# --- 5. configuration (idempotent; before execd so it reads it at start) -----
# global: let root (uid/gid 0) run jobs; default min_uid/min_gid is 1000 and a
# root job fails with "gid of user root (0) less than minimum allowed in conf".
qconf -sconf global > "$CFG/global"
# reporting flush_time 15 s -> 1 s, so qacct sees a finished job within ~1 s.
if grep -qE '^min_(uid|gid)[[:space:]]+[1-9]' "$CFG/global" || grep -q 'flush_time=00:00:15' "$CFG/global"; then
  sed -i -E 's/^(min_uid[[:space:]]+).*/\10/; s/^(min_gid[[:space:]]+).*/\10/; s/flush_time=00:00:15/flush_time=00:00:01/' "$CFG/global"
  (cd "$CFG" && qq qconf -Mconf global)
  log "global config: min_uid=0 min_gid=0, accounting flush_time 1 s"
fi
# scheduler: run every second (default 15 s) and on each submit/finish.
qconf -ssconf > "$CFG/sched"
if ! grep -qE '^schedule_interval[[:space:]]+0:0:1$' "$CFG/sched"; then
  sed -i -E 's/^(schedule_interval[[:space:]]+).*/\10:0:1/; s/^(flush_submit_sec[[:space:]]+).*/\11/; s/^(flush_finish_sec[[:space:]]+).*/\11/; s/^(job_load_adjustments[[:space:]]+).*/\1NONE/; s/^(load_adjustment_decay_time[[:space:]]+).*/\10:0:0/' "$CFG/sched"
  qq qconf -Msconf "$CFG/sched"
  log "scheduler: schedule_interval 0:0:1, flush_submit/finish 1 s"
fi
qconf -ss 2>/dev/null | grep -qx "$NODE" || { qq qconf -as "$NODE"; log "added submit host $NODE"; }
qconf -sh 2>/dev/null | grep -qx "$NODE" || { qq qconf -ah "$NODE"; log "added admin host $NODE"; }
if ! qconf -spl 2>/dev/null | grep -qx smp; then
  cat > "$CFG/smp" <<'EOF'
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     TRUE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
  qq qconf -Ap "$CFG/smp"; log "added parallel environment smp"
fi
cat > "$CFG/all.q" <<EOF
qname                 all.q
hostlist              $NODE
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $SLOTS
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
if ! qconf -sql 2>/dev/null | grep -qx all.q; then
  qq qconf -Aq "$CFG/all.q"; log "added queue all.q (slots $SLOTS on $NODE)"
else
  cur_slots=$(qconf -sq all.q | awk '$1=="slots"{print $2}')
  cur_hosts=$(qconf -sq all.q | awk '$1=="hostlist"{print $2}')
  if [ "$cur_slots" != "$SLOTS" ] || [ "$cur_hosts" != "$NODE" ]; then
    qq qconf -Mq "$CFG/all.q"; log "updated queue all.q (slots $SLOTS on $NODE)"
  fi
fi

# --- 6. execd ----------------------------------------------------------------
execd_pidfile() { ls $SPOOL/execd/*/execd.pid 2>/dev/null | head -1 || true; }
ef="$(execd_pidfile)"
if [ -n "$ef" ] && pid_alive "$ef"; then
  log "sge_execd already running (pid $(cat "$ef"))"
else
  [ -n "$ef" ] && rm -f "$ef"
  start_daemon sge_execd || die "sge_execd failed to start; see $SPOOL/execd/*/messages"
fi

# --- 7. wait for the queue instance to be usable ------------------------------
qi_state() { qstat -f -q "all.q@$NODE" 2>/dev/null | awk -v q="all.q@$NODE" '$1==q {print ($6=="" ? "ok" : $6)}'; }
log "waiting (up to ${WAIT_S}s) for queue instance all.q@$NODE"
deadline=$(( $(date +%s) + WAIT_S ))
while [ "$(qi_state)" != ok ]; do
  st="$(qi_state)"
  case "$st" in *E*) log "queue instance in error state ($st); clearing"; qmod -c "all.q@$NODE" >/dev/null 2>&1 || true ;; esac
  case "$st" in *d*) qmod -e "all.q@$NODE" >/dev/null 2>&1 || true ;; esac
  [ "$(date +%s)" -lt "$deadline" ] || die "all.q@$NODE not usable after ${WAIT_S}s (state '$st'); see $SPOOL/execd/*/messages and $SPOOL/qmaster/messages"
  sleep 0.5
done
log "Grid Engine is up: $(qstat -f -q "all.q@$NODE" | awk -v q="all.q@$NODE" '$1==q {print $1, "slots(resv/used/tot)=" $3}')"
log "listening: $(ss -Hltn '( sport = :6444 or sport = :6445 )' | awk '{print $4}' | tr '\n' ' ')"
log_elapsed
