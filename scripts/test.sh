#!/usr/bin/env bash
# Run the whole test suite (all tiers): host setup, test guest, pytest.
#   scripts/test.sh [PYTEST ARGS...]      exit status is pytest's
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-$PWD/.venv}; export VENV

bash scripts/setup-host.sh
# The real-host tier boots this guest; tests find it through IAASCTL_GUEST_DIR.
export IAASCTL_GUEST_DIR=${IAASCTL_GUEST_DIR:-/var/lib/iaasctl-test/guest}
bash tests/guest/build-guest.sh "$IAASCTL_GUEST_DIR"
echo "==> test: pytest -q tests $*"
exec "$VENV/bin/python" -m pytest -q tests "$@"
