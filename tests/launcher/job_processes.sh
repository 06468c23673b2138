# Sourced by the launcher tests: find a job's processes by a marker in their environment, and who
# holds a listening TCP port.

# left_over MARKER: how many processes (other than this shell) carry MARKER in their environment.
left_over() {
  grep -l "$1" /proc/[0-9]*/environ 2>/dev/null | grep -v "/proc/$$/" | wc -l
}

# rank_pid MARKER RANK [NAME]: the pid of the process named NAME (default tandem-train) whose
# environment holds MARKER and RANK=RANK; empty when there is none.
rank_pid() {
  local marker=$1 rank=$2 name=${3:-tandem-train} f p
  for f in $(grep -l "$marker" /proc/[0-9]*/environ 2>/dev/null); do
    p=${f#/proc/}
    p=${p%/environ}
    [ "$p" = "$$" ] && continue
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$name" ] || continue
    tr '\0' '\n' < "$f" 2>/dev/null | grep -qx "RANK=$rank" && { echo "$p"; return 0; }
  done
}

# listener_pids PORT: the pids holding a TCP socket that listens on PORT (IPv4), one per line.
listener_pids() {
  local hex inode
  printf -v hex '%04X' "$1"
  for inode in $(awk -v port=":$hex" 'substr($2, length($2) - 4) == port && $4 == "0A" { print $10 }' \
    /proc/net/tcp); do
    find /proc/[0-9]*/fd -lname "socket:\[$inode\]" 2>/dev/null | cut -d/ -f3
  done | sort -u
}
