#!/usr/bin/env bash
# tandem-train on N ranks started by Open MPI's mpirun, on this machine:
#
#   examples/mpirun.sh N CONFIG [tandem-train arguments]...
#   examples/mpirun.sh 4 examples/configs/tiny.toml --set parallel.pp=2 --set parallel.ep=2 \
#     --set parallel.schedule=dualpipe --set parallel.microbatches=4
#
# The flags are those of `make demo`: --allow-run-as-root (containers run as root),
# --oversubscribe (more ranks than cores: 4 ranks on 2 cores), --mca mpi_yield_when_idle 1 (a
# rank waiting for a message gives its core to one that computes) and -x OMP_NUM_THREADS=1;
# tandem sizes each rank's thread pool itself (train.threads, default: the cores / the ranks on
# the node). Every group runs on MPI (comm.world = "auto"); each rank learns its place from
# OMPI_COMM_WORLD_*, also inside a slurm allocation (salloc, sbatch), whose SLURM_* variables it
# then ignores.
#
# On several machines, with the same paths on each (and the data and checkpoint.dir on a shared
# filesystem), list the machines and their ranks in a hostfile ("node01 slots=8", one line per
# machine); mpirun starts the remote ranks over ssh:
#
#   mpirun --hostfile hosts -np 16 --map-by ppr:8:node --mca mpi_yield_when_idle 1 \
#     -x OMP_NUM_THREADS=1 -x PATH -x LD_LIBRARY_PATH build/bin/tandem-train CONFIG ...
#
# TANDEM_TRAIN names another tandem-train binary (default: build/bin/tandem-train).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 N CONFIG [tandem-train arguments]..." >&2
  exit 2
fi
ranks=$1
shift
exec mpirun --allow-run-as-root --oversubscribe --mca mpi_yield_when_idle 1 -x OMP_NUM_THREADS=1 \
  -np "$ranks" "${TANDEM_TRAIN:-build/bin/tandem-train}" "$@"
