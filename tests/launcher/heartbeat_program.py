"""A rank for the launcher's heartbeat tests: beats on TANDEM_HEARTBEAT_FD the way tandem-train
does, then behaves as asked.

  slow     beats every 0.1 s for 2 s and exits 0 (alive all along, however long it takes)
  freeze   beats once, then runs on silent (what a SIGSTOPped rank looks like to the launcher)
  exiting  beats once, closes the socket (end of file: it is exiting), takes 1.5 s to exit 0
"""
import os
import sys
import time

fd = int(os.environ["TANDEM_HEARTBEAT_FD"])
mode = sys.argv[1]
print(f"rank {os.environ['RANK']}: {mode}", flush=True)
if mode == "slow":
    for _ in range(20):
        os.write(fd, b"b")
        time.sleep(0.1)
elif mode == "freeze":
    os.write(fd, b"b")
    time.sleep(60)
elif mode == "exiting":
    os.write(fd, b"b")
    os.close(fd)
    time.sleep(1.5)
else:
    sys.exit(f"heartbeat_program.py: unknown mode {mode!r}")
