#!/bin/sh
# Leaks about 1 MiB of memory a second, until medic kills it for passing memory-max.
trap 'exit 0' TERM
chunk=$(head -c 1048576 /dev/zero | tr '\0' x)
data=""
n=0
while :; do
    data="$data$chunk"
    n=$((n + 1))
    echo "holding $n MiB"
    sleep 1
done
