#!/usr/bin/env bash
# The device path on the devices' instruction sets: Debian bookworm armel (ARMv6, Pi Zero) and
# arm64 (aarch64) userlands under qemu-user-static, both at once, with the host side (edgekd
# serve, the fault proxy, the x86 references) from the .venv that the README's test command made.
# The userlands are built on a fresh machine and cached for the next run (tests/arm/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
EDGEKD_HOST_PYTHON=$PWD/.venv/bin/python bash tests/arm/run all
echo "arm: both targets in $((SECONDS - start)) s"
