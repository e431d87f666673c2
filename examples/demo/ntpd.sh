#!/bin/sh
# Stands in for ntpd: prints a line now and then.
. "$(dirname "$0")/common.sh"
trap 'exit 0' TERM
n=0
while :; do
    n=$((n + 1))
    echo "time adjusted by 0.00$n s"
    date +%s > "$DEMO_DIR/ntpd.last"
    sleep 10 &
    wait $!
done
