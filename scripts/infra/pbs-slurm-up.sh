#!/usr/bin/env bash
# pbs-slurm-up.sh - PBS/Torque *syntax* (qsub, qstat, qdel, ...) on the local
# Slurm, in /opt/slurm-torque/bin. No PBS server exists for Debian 12 (nor on
# PyPI); Slurm's Torque wrappers (package slurm-wlm-torque) translate PBS
# options into sbatch/squeue/scancel. This script:
#   1. installs a Slurm TaskProlog exporting PBS_JOBID, PBS_O_WORKDIR,
#      PBS_NODEFILE, PBS_ARRAYID, ... into every job (the wrappers set none),
#   2. brings Slurm up (slurm-up.sh, which picks the prolog up),
#   3. unpacks slurm-wlm-torque into /opt/slurm-torque/bin instead of
#      installing it: the package conflicts with gridengine-client, which owns
#      /usr/bin/qsub too; unpacked, both live on one machine.
# Use: PATH=/opt/slurm-torque/bin:$PATH (the PBS tests pass this directory).
set -euo pipefail
INFRA_TAG=pbs-slurm-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
DEST=/opt/slurm-torque
PROLOG=/etc/slurm/infra-task-prolog.sh

# --- 1. the PBS_* environment prolog -------------------------------------------
install -d /etc/slurm
TMPP="$(mktemp)"; trap 'rm -f "$TMPP"' EXIT
cat > "$TMPP" <<'PROLOG_EOF'
#!/bin/sh
# Written by infra/pbs-slurm-up.sh. Slurm TaskProlog: each "export NAME=VALUE"
# line printed here is added to the job's environment (PBS/Torque names).
if [ -n "$SLURM_ARRAY_JOB_ID" ]; then
  echo "export PBS_JOBID=${SLURM_ARRAY_JOB_ID}[${SLURM_ARRAY_TASK_ID}]"
  echo "export PBS_ARRAYID=$SLURM_ARRAY_TASK_ID"
  echo "export PBS_ARRAY_INDEX=$SLURM_ARRAY_TASK_ID"
else
  echo "export PBS_JOBID=$SLURM_JOB_ID"
fi
echo "export PBS_JOBNAME=$SLURM_JOB_NAME"
echo "export PBS_O_WORKDIR=${SLURM_SUBMIT_DIR:-$PWD}"
echo "export PBS_O_HOST=${SLURM_SUBMIT_HOST:-localhost}"
echo "export PBS_QUEUE=$SLURM_JOB_PARTITION"
echo "export PBS_NUM_NODES=${SLURM_JOB_NUM_NODES:-1}"
echo "export PBS_NP=${SLURM_NTASKS:-${SLURM_CPUS_ON_NODE:-1}}"
echo "export PBS_ENVIRONMENT=PBS_BATCH"
nf="/tmp/pbs_nodefile.$SLURM_JOB_ID"
if [ ! -e "$nf" ]; then
  n=${SLURM_CPUS_ON_NODE:-1}; i=0
  while [ "$i" -lt "$n" ]; do hostname -s; i=$((i + 1)); done > "$nf" 2>/dev/null || true
fi
echo "export PBS_NODEFILE=$nf"
PROLOG_EOF
if ! cmp -s "$TMPP" "$PROLOG"; then
  install -m 0755 "$TMPP" "$PROLOG"; log "wrote $PROLOG"
fi

# --- 2. Slurm ------------------------------------------------------------------
bash "$INFRA_DIR/slurm-up.sh" || die "slurm-up.sh failed"

# --- 3. the wrappers (Perl: they need Slurm's Perl bindings and Switch) --------
apt_install libslurm-perl libslurmdb-perl libswitch-perl
want_version="$(dpkg-query -W -f='${Version}' slurm-client)"
if [ -x "$DEST/bin/qsub" ] && [ "$(cat "$DEST/.version" 2>/dev/null)" = "$want_version" ]; then
  log "wrappers already unpacked in $DEST/bin"
else
  log "unpacking slurm-wlm-torque into $DEST"
  W="$(mktemp -d)"
  ( cd "$W" && apt-get download slurm-wlm-torque >/dev/null 2>&1 ) \
    || { apt-get update -qq && ( cd "$W" && apt-get download slurm-wlm-torque >/dev/null ); } \
    || die "apt-get download slurm-wlm-torque failed"
  dpkg-deb -x "$W"/slurm-wlm-torque_*.deb "$W/root" || die "dpkg-deb -x failed"
  # Assemble beside and rename, so a concurrent run never sees half a directory.
  rm -rf "$DEST.new"; install -d "$DEST.new/bin"
  cp -a "$W/root/usr/bin/." "$DEST.new/bin/"
  # The wrappers call "$FindBin::Bin/sbatch" etc.: Slurm's tools go beside them.
  for b in sbatch salloc srun scontrol squeue scancel sinfo sacct; do
    ln -sf "/usr/bin/$b" "$DEST.new/bin/$b"
  done
  printf '%s' "$want_version" > "$DEST.new/.version"
  rm -rf "$DEST" "$W"; mv "$DEST.new" "$DEST"
fi

# --- 4. smoke test ---------------------------------------------------------------
out="$(PATH=$DEST/bin:$PATH pbsnodes -a 2>&1 | head -3 | tr '\n' ' ')"
grep -q 'state = ' <<<"$out" || die "pbsnodes -a failed: $out"
log "PBS front end ready in $DEST/bin: $out"
log_elapsed
