#!/usr/bin/env bash
# One test tier (tests/README.md): `pytest -m TIER` under a time limit, then one
# line with the tier's result and duration, so a slow tier shows in `make test`
# and in CI (.ci/run runs `make test`).
#
#   hack/tier.sh TIER LIMIT_SECONDS [pytest args...]
#
# At the limit pytest gets SIGTERM, which tests/support/plugin.py turns into
# Ctrl-C: the session's clusters, emulators and controllers are torn down;
# SIGKILL follows 60 s later if that hangs. With TIER_TIMES set (make test),
# the line is also appended to that file for the summary at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 2 ]]; then
  echo "usage: hack/tier.sh TIER LIMIT_SECONDS [pytest args...]" >&2
  exit 2
fi
tier=$1 limit=$2
shift 2
start=$(date +%s)
timeout --foreground --kill-after=60 "$limit" .venv/bin/pytest -m "$tier" "$@"
rc=$?
took=$(($(date +%s) - start))
case $rc in
  0) verdict="passed" ;;
  124 | 137) verdict="TIMED OUT" ;;
  *) verdict="FAILED (pytest exit $rc)" ;;
esac
# TIER_LABEL names a run of a tier under other settings (e2e-oldest).
line=$(printf 'tier %-8s %-26s %5d s (limit %d s)' "${TIER_LABEL:-$tier}" "$verdict" "$took" "$limit")
echo "$line"
if [[ -n ${TIER_TIMES:-} ]]; then
  echo "$line" >>"$TIER_TIMES"
fi
# In `make test` a failing tier stops make: first collect the tier running
# beside the foreground ones (hack/beside.sh), so none is left running.
if [[ $rc -ne 0 && -n ${TIER_TIMES:-} ]]; then
  for pidfile in .pytest_cache/beside/*.pid; do
    other=$(basename "$pidfile" .pid)
    if [[ -e $pidfile && $other != "$tier" ]]; then
      bash hack/beside.sh wait "$other"
    fi
  done
fi
exit "$rc"
