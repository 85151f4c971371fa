#!/usr/bin/env bash
# Demo: prepare the host, apply the example manifests, show what is running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-$PWD/.venv}; export VENV

bash scripts/setup-host.sh
IAASCTL=$VENV/bin/iaasctl
echo "==> demo: iaasctl apply -f specs/examples/"
"$IAASCTL" apply -f specs/examples/ --yes
for kind in vms networks volumes pools; do
  echo "==> demo: iaasctl get $kind"
  "$IAASCTL" get "$kind"
done
