#!/usr/bin/env bash
# Demo: prepare the host, apply the example manifests, show what is running.
#   scripts/demo.sh            (as root; running it again is harmless: nothing to change)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-$PWD/.venv}; export VENV

bash scripts/setup-host.sh
# The example VM boots the tiny test guest (Debian cloud kernel + busybox) directly.
bash tests/guest/build-guest.sh /var/lib/libvirt/boot/iaasctl-guest >/dev/null
IAASCTL=$VENV/bin/iaasctl
echo "==> demo: iaasctl validate specs/examples/"
"$IAASCTL" validate specs/examples/
echo "==> demo: iaasctl apply -f specs/examples/"
"$IAASCTL" apply -f specs/examples/ --yes
echo "==> demo: waiting for example-vm's DHCP lease (at most 60 s)"
for _ in $(seq 60); do
  "$IAASCTL" get vms example-vm -o json | grep -q '"ip": "10\.' && break
  sleep 1
done
for kind in vms networks volumes pools; do
  echo "==> demo: iaasctl get $kind"
  "$IAASCTL" get "$kind"
done
echo "==> demo: iaasctl plan -f specs/examples/ (a converged host has nothing to do)"
"$IAASCTL" plan -f specs/examples/
