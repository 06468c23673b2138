#!/usr/bin/env bash
# Stands in for tandem-train in the first attempt of the sbatch test, until tandem-train stops on
# SIGTERM itself: waits for SIGTERM and exits 4 (comm::kStoppedExitCode, "stopped on request at a
# checkpoint"), as every rank of tandem-train will. In a requeued attempt (SLURM_RESTART_COUNT of
# 1 or more) it runs the real one, $TANDEM_REAL_TRAIN, with the same arguments.
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then exec "$TANDEM_REAL_TRAIN" "$@"; fi
trap 'echo "stops_on_term: rank $SLURM_PROCID: SIGTERM; exiting 4"; exit 4' TERM
echo "stops_on_term: rank $SLURM_PROCID: waiting for SIGTERM"
for _ in $(seq 600); do
  sleep 0.1 &
  wait $!
done
echo "stops_on_term: rank $SLURM_PROCID: no SIGTERM in 60 s"
exit 1
