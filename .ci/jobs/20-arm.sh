#!/usr/bin/env bash
# The device path on the devices' instruction sets: Debian bookworm armel (ARMv6, Pi Zero) and
# arm64 (aarch64) userlands under qemu-user-static, the host side on x86 from the README's test
# venv. The userlands are built once and cached in ~/.cache/edgekd-arm (tests/arm/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
EDGEKD_HOST_PYTHON=$PWD/.venv/bin/python bash tests/arm/run all
echo "arm: both targets in $((SECONDS - start)) s"
