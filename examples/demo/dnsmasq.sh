#!/bin/sh
# Stands in for dnsmasq: takes a moment to start, says it is ready on fd 3, reloads on SIGHUP.
conf="$(dirname "$0")/dnsmasq.conf"
trap 'echo "SIGHUP: re-reading $conf: $(wc -l < "$conf") lines"' HUP
trap 'echo "SIGTERM: exiting"; exit 0' TERM
echo "dnsmasq starting, config $conf"
sleep 0.3
echo "listening on 127.0.0.1:53 (pretend)"
echo >&3
exec 3>&-
while :; do
    sleep 1 &
    wait $!
done
