#!/bin/sh
# Probe of ntpd: healthy when it wrote its file in the last 30 s.
. "$(dirname "$0")/common.sh"
last=$(cat "$DEMO_DIR/ntpd.last" 2>/dev/null || echo 0)
[ $(( $(date +%s) - last )) -lt 30 ]
