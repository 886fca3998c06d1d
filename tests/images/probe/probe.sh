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
  listen)      exec perl -MIO::Socket::INET -e '
                 my $s = IO::Socket::INET->new(LocalPort => $ARGV[0], Listen => 16, ReuseAddr => 1)
                   or die "listen: $!\n";
                 $| = 1; print "listening on $ARGV[0]\n";
                 while (my $c = $s->accept) { print $c "hello\n"; close $c }' "$1" ;;
  connect)     exec perl -MIO::Socket::INET -e '
                 my $c = IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => $ARGV[1], Timeout => 5)
                   or die "connect $ARGV[0]:$ARGV[1]: $@\n";
                 print "connected: ", scalar <$c>' "$1" "$2" ;;
  *)           echo "probe: unknown command $cmd" >&2; exit 64 ;;
esac
