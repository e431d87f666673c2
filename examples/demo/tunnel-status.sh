#!/bin/sh
# Condition-reporting probe: prints the tunnel's condition (`ready` means healthy).
. "$(dirname "$0")/common.sh"
cat "$DEMO_DIR/tunnel.state" 2>/dev/null || echo connecting
