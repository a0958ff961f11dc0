#!/usr/bin/env bash
# slurm-up.sh - a single-node Slurm cluster (Debian 12, Slurm 22.05) on
# loopback, without systemd: munged + slurmctld + slurmd started directly.
#
# Idempotent: with everything up it only re-checks health (~0.5 s); a changed
# configuration restarts slurmctld + slurmd (~4 s).
# Env (optional):
#   SLURM_CPUS    CPUs to advertise (default: what slurmd -C detects; more
#                 than the hardware has oversubscribes it, via config_overrides)
#   SLURM_WAIT_S  seconds to wait for the node to become idle (default 90)
# If /etc/slurm/infra-task-prolog.sh exists and is executable it becomes the
# TaskProlog (pbs-slurm-up.sh installs one that exports PBS_* variables).
set -euo pipefail
INFRA_TAG=slurm-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
require_tools

NODE="$(node_name)"
WAIT_S="${SLURM_WAIT_S:-90}"
CONF=/etc/slurm/slurm.conf
RUNDIR=/run/slurm
LOGDIR=/var/log/slurm
STATEDIR=/var/lib/slurm/slurmctld
SPOOLDIR=/var/lib/slurm/slurmd
CTLD_PID=$RUNDIR/slurmctld.pid
SLURMD_PID=$RUNDIR/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

# --- 1. packages: slurm-wlm = slurmctld + slurmd + client + plugins; munge = auth
apt_install slurm-wlm munge
command -v slurmctld >/dev/null || die "slurmctld not found after install"
if pid1_is_systemd; then
  log "systemd is PID 1: stopping the packaged units (the daemons below use our config)"
  systemctl stop slurmd slurmctld munge >/dev/null 2>&1 || true
fi
id slurm >/dev/null 2>&1 || die "user 'slurm' missing (the slurm-wlm packages create it)"
id munge >/dev/null 2>&1 || die "user 'munge' missing (the munge package creates it)"

# --- 2. munge ----------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if pid_alive "$MUNGE_PID" && munge -n </dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running (pid $(cat $MUNGE_PID))"
else
  rm -f "$MUNGE_PID"
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force \
    || die "munged failed to start (see /var/log/munge/munged.log)"
  wait_until 15 munge sh -c 'munge -n </dev/null | unmunge' \
    || die "munge round trip (munge -n | unmunge) failed; see /var/log/munge/munged.log"
fi

# --- 3. slurm.conf -----------------------------------------------------------
install -d -o slurm -g slurm -m 0755 "$RUNDIR" "$LOGDIR" /var/lib/slurm "$STATEDIR"
install -d -o root -g root -m 0755 "$SPOOLDIR" /etc/slurm

# The node described with slurmd's own numbers (CPUs, sockets, cores,
# threads, RealMemory), so that it is never drained for "Low RealMemory".
HW="$(slurmd -C 2>/dev/null | head -1)" || true
[ -n "$HW" ] || die "slurmd -C printed nothing; cannot detect the hardware"
get_hw() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$HW"; }
HW_CPUS=$(get_hw CPUs); REALMEM=$(get_hw RealMemory)
[ -n "$HW_CPUS" ] && [ -n "$REALMEM" ] || die "could not parse slurmd -C output: $HW"
CPUS="${SLURM_CPUS:-$HW_CPUS}"
EXTRA_SLURMD_PARAMS=""
if [ "$CPUS" != "$HW_CPUS" ]; then
  NODE_HW="CPUs=$CPUS"
  EXTRA_SLURMD_PARAMS="SlurmdParameters=config_overrides"
  log "advertising $CPUS CPUs (the hardware has $HW_CPUS) via config_overrides"
else
  NODE_HW="CPUs=$CPUS Boards=$(get_hw Boards) SocketsPerBoard=$(get_hw SocketsPerBoard) CoresPerSocket=$(get_hw CoresPerSocket) ThreadsPerCore=$(get_hw ThreadsPerCore)"
fi
TASK_PROLOG_LINE=""
[ -x /etc/slurm/infra-task-prolog.sh ] && TASK_PROLOG_LINE="TaskProlog=/etc/slurm/infra-task-prolog.sh"

TMP_CONF="$(mktemp)"
trap 'rm -f "$TMP_CONF"' EXIT
# The text matches the reference script's (shared/infra) byte for byte, so
# that checkouts using either on one machine do not restart each other's Slurm.
cat >"$TMP_CONF" <<CONF_EOF
# Written by infra/slurm-up.sh - single-node cluster on loopback.
ClusterName=faas
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
# Bind to the configured address (127.0.0.1) instead of INADDR_ANY.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATEDIR
SlurmdSpoolDir=$SPOOLDIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# linuxproc: plain /proc-based tracking, no cgroups needed (SLURM_CGROUP=1
# switches to cgroups, which also work in this sandbox via cgroup v1).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( REALMEM / CPUS ))
SchedulerType=sched/backfill
# Default batch_sched_delay is 3 s: sbatch jobs start on the next 1-s tick
# only after that delay. 0 makes sbatch -> running ~0.5 s on average.
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
ReturnToService=2
# Without slurmdbd (SLURM_ACCOUNTING=1) sacct has no data; finished jobs stay
# in 'scontrol show job' for MinJobAge seconds and are appended to JobCompLoc
# ('sacct -c' reads that file).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGDIR/jobcomp.log
MinJobAge=300
KillWait=5
MailProg=/bin/true
$EXTRA_SLURMD_PARAMS
$TASK_PROLOG_LINE
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $NODE_HW RealMemory=$REALMEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF_EOF
CONF_CHANGED=0
if ! cmp -s "$TMP_CONF" "$CONF"; then
  install -m 0644 "$TMP_CONF" "$CONF"
  CONF_CHANGED=1
  log "wrote $CONF (node $NODE: $NODE_HW RealMemory=$REALMEM)"
fi
touch "$LOGDIR/jobcomp.log"; chown slurm:slurm "$LOGDIR/jobcomp.log"

# --- 4. daemons --------------------------------------------------------------
if [ "$CONF_CHANGED" -eq 1 ]; then
  pid_alive "$SLURMD_PID" && stop_pidfile slurmd "$SLURMD_PID"
  pid_alive "$CTLD_PID" && stop_pidfile slurmctld "$CTLD_PID"
fi
if pid_alive "$CTLD_PID"; then
  log "slurmctld already running (pid $(cat $CTLD_PID))"
else
  rm -f "$CTLD_PID"
  log "starting slurmctld"
  slurmctld || die "slurmctld failed to start; tail of $LOGDIR/slurmctld.log:
$(tail -n 20 $LOGDIR/slurmctld.log 2>/dev/null)"
fi
wait_until 30 slurmctld scontrol ping \
  || die "slurmctld does not answer 'scontrol ping'; tail of $LOGDIR/slurmctld.log:
$(tail -n 20 $LOGDIR/slurmctld.log 2>/dev/null)"
if pid_alive "$SLURMD_PID"; then
  log "slurmd already running (pid $(cat $SLURMD_PID))"
else
  rm -f "$SLURMD_PID"
  log "starting slurmd"
  slurmd -N "$NODE" || die "slurmd failed to start; tail of $LOGDIR/slurmd.log:
$(tail -n 20 $LOGDIR/slurmd.log 2>/dev/null)"
fi

# --- 5. wait for the node ------------------------------------------------------
node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1; }
node_ready() { case "$(node_state)" in idle|mixed|allocated|completing) return 0;; *) return 1;; esac; }
deadline=$(( $(date +%s) + WAIT_S )); resumed=0
while ! node_ready; do
  st="$(node_state)"
  # A node left drained/down by an earlier run (a crash, a restart) is resumed once.
  if [ "$resumed" -eq 0 ] && [[ "$st" == drain* || "$st" == down* ]]; then
    log "node is '$st' (reason: $(sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null)); resuming it"
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    resumed=1
  fi
  [ "$(date +%s)" -lt "$deadline" ] \
    || die "node $NODE not idle after ${WAIT_S}s (state '$st'); see $LOGDIR/slurmd.log and $LOGDIR/slurmctld.log"
  sleep 0.5
done
log "Slurm is up: $(sinfo -h -N -n "$NODE" -o '%N %T cpus=%c mem=%mMB partition=%P')"
log_elapsed
