#!/usr/bin/env bash
# A test tier that runs beside the tiers after it in `make test` (the node tier:
# most of its time is the kubelet's certificate refresh wait, tests/README.md).
#
#   hack/beside.sh start TIER LIMIT [pytest args...]   hack/tier.sh in the background
#   hack/beside.sh wait TIER                           until it ends; its output; its exit code
#
# `start` returns at once; the tier's output goes to .pytest_cache/beside/TIER.log
# and is printed whole by `wait` (so it does not interleave with the tiers in
# the foreground); hack/tier.sh still prints its result line there and appends
# it to TIER_TIMES. A foreground tier that fails calls `wait` too (hack/tier.sh),
# so `make test` never leaves it running. Interrupted, `wait` stops it the way
# a tier's time limit does (SIGTERM to its pytest, which tears down).
set -uo pipefail
cd "$(dirname "$0")/.."
dir=.pytest_cache/beside
if [[ $# -lt 2 ]]; then
  echo "usage: hack/beside.sh start TIER LIMIT [pytest args...] | wait TIER" >&2
  exit 2
fi
action=$1 tier=$2
shift 2
pidfile=$dir/$tier.pid rcfile=$dir/$tier.rc log=$dir/$tier.log

case $action in
start)
  mkdir -p "$dir"
  rm -f "$pidfile" "$rcfile"
  # Its own session: the terminal's Ctrl-C reaches it through `wait`'s trap.
  setsid bash -c 'bash hack/tier.sh "$@"; echo $? >"'"$rcfile"'"' beside "$tier" "$@" \
    >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "tier $tier started in the background, beside the next tiers (output: $log, printed when it ends)"
  ;;
wait)
  [[ -f $pidfile ]] || exit 0
  pid=$(<"$pidfile")
  stop() {
    # tier.sh's child is `timeout`, which passes SIGTERM on to pytest once.
    echo "stopping the tier $tier running beside" >&2
    pkill -TERM -P "$(pgrep -P "$pid" -x bash | head -n1)" 2>/dev/null
  }
  trap 'stop' INT TERM
  [[ -f $rcfile ]] || echo "waiting for the tier $tier running beside (output: $log)"
  running() { tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q 'hack/tier.sh'; }
  while running && [[ ! -f $rcfile ]]; do
    sleep 2
  done
  # The rc file is written just before the process ends.
  for _ in 1 2 3 4 5; do [[ -f $rcfile ]] && break; sleep 1; done
  trap - INT TERM
  echo "---- tier $tier (ran beside the tiers after it): its output ----"
  cat "$log"
  echo "---- end of tier $tier ----"
  rc=$(cat "$rcfile" 2>/dev/null || echo 1)
  rm -f "$pidfile"
  exit "$rc"
  ;;
*)
  echo "hack/beside.sh: unknown action $action (start or wait)" >&2
  exit 2
  ;;
esac
