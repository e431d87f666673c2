# Sourced by the demo scripts: a scratch directory per user.
DEMO_DIR="${TMPDIR:-/tmp}/medic-demo-$(id -u)"
mkdir -p "$DEMO_DIR"
