#!/bin/sh
# probe COMMAND [ARGS]: behaviours the cluster tests observe from outside the container.
set -eu
cmd=${1:-hello}
[ $# -gt 0 ] && shift
case "$cmd" in
  hello)       echo "hello from $(hostname) as uid $(id -u)" ;;
  echo)        echo "$*" ;;
  sleep)       echo "sleeping $1"; exec sleep "$1" ;;
  terminate)   printf '%s' "$*" > /dev/termination-log; exit "${EXIT_CODE:-0}" ;;
  eat-memory)  echo "allocating without bound"; exec tail /dev/zero ;;
  sha256)      sha256sum "$1" | cut -d' ' -f1 ;;
  *)           echo "probe: unknown command $cmd" >&2; exit 64 ;;
esac
