#!/bin/sh
# Stands in for a firewall script: `up` installs rules, `down` removes them.
. "$(dirname "$0")/common.sh"
case "$1" in
up)
    echo "installing 42 rules"
    sleep 0.2
    touch "$DEMO_DIR/firewall.up"
    ;;
down)
    echo "removing rules"
    rm -f "$DEMO_DIR/firewall.up"
    ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
