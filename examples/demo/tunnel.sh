#!/bin/sh
# Stands in for xl2tpd: connects for 2 s, holds the tunnel 10-20 s, then loses it and stays
# down until restarted. Its state is in a file the probe reads.
. "$(dirname "$0")/common.sh"
state="$DEMO_DIR/tunnel.state"
trap 'echo stopped > "$state"; exit 0' TERM
echo connecting > "$state"
echo "tunnel: connecting"
sleep 2
echo ready > "$state"
echo "tunnel: up"
sleep $((10 + $$ % 10))
echo tunnel-down > "$state"
echo "tunnel: peer stopped answering"
while :; do
    sleep 1 &
    wait $!
done
