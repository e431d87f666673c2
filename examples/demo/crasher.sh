#!/bin/sh
# Crashes half a second after every start.
echo "crasher: starting"
sleep 0.5
echo "crasher: segmentation fault (pretend)" >&2
exit 139
