#!/usr/bin/env bash
# slurm-down.sh - cancel all jobs and stop slurmd, slurmctld and munged
# started by slurm-up.sh. Job state and configuration are kept. Idempotent.
set -euo pipefail
INFRA_TAG=slurm-down
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root
if command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
  scancel --full --quiet --user=root 2>/dev/null || true
fi
stop_pidfile slurmd /run/slurm/slurmd.pid
stop_pidfile slurmctld /run/slurm/slurmctld.pid
stop_pidfile munged /run/munge/munged.pid
