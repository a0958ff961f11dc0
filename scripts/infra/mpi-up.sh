#!/usr/bin/env bash
# mpi-up.sh - Open MPI (Debian 12's openmpi-bin) and mpi4py for Debian's /usr/bin/python3,
#   for MPI tasks (crates/funcx-core's MpiFunction, examples/mpi.rs, tests/mpi.rs).
#   Nothing runs as a daemon: mpirun starts the ranks of each task itself. As root, mpirun
#   needs --allow-run-as-root (MpiFunction adds it when it runs as uid 0); on a machine with
#   fewer cores than ranks, --oversubscribe.
# Idempotent; ends with a 2-rank hello through mpi4py.
set -euo pipefail
INFRA_TAG=mpi-up
# shellcheck source=_common.sh
. "$(dirname "$(readlink -f "$0")")/_common.sh"
require_root

apt_install openmpi-bin libopenmpi-dev python3-mpi4py
command -v mpirun >/dev/null || die "mpirun is not on PATH after installing openmpi-bin"
# Debian's mpi4py is built for Debian's interpreter, not for any other python3 on PATH.
/usr/bin/python3 -c 'import mpi4py' || die "/usr/bin/python3 cannot import mpi4py"
out=$(timeout 60 mpirun --allow-run-as-root --oversubscribe -n 2 /usr/bin/python3 -c \
  'from mpi4py import MPI; c = MPI.COMM_WORLD; print(c.Get_rank(), c.Get_size())' 2>&1) \
  || die "a 2-rank mpi4py run failed: $out"
[ "$(printf '%s\n' "$out" | grep -c ' 2$')" -eq 2 ] || die "expected 2 ranks of size 2, got: $out"
log "mpirun $(mpirun --version 2>/dev/null | head -1 | awk '{print $NF}'): 2 ranks of mpi4py answered"
log_elapsed
