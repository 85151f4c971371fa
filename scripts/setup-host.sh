#!/usr/bin/env bash
# Prepare a Debian 12 host for iaasctl: packages, libvirtd, /dev/kvm access, a
# Python virtualenv with the project installed. Idempotent: safe to run again.
#
# Env: VENV (default <repo>/.venv), PYTHON (default /usr/bin/python3),
#      SKIP_APT=1 to skip package installation.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
URI=qemu:///system
log() { printf '==> setup-host: %s\n' "$*"; }
die() { printf 'setup-host: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

PACKAGES=(
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils ovmf
  dnsmasq-base iptables iproute2 ethtool          # libvirt NAT networks
  libvirt-dev pkg-config gcc python3-venv python3-dev  # builds libvirt-python
  busybox-static cpio gzip genisoimage xorriso    # test guest + cloud-init seed ISOs
  tini                                            # reaps qemu for libvirtd without systemd
)

# --- 1. Debian packages --------------------------------------------------------
if [ "${SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages already installed"
  else
    export DEBIAN_FRONTEND=noninteractive
    # Wait for a concurrent apt/dpkg run instead of failing on the lock.
    APT=(apt-get -q -y -o DPkg::Lock::Timeout=600)
    # Refresh package lists only when missing or older than a day.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
      log "apt-get update"
      "${APT[@]}" update
    fi
    log "installing: ${missing[*]}"
    "${APT[@]}" install --no-install-recommends "${missing[@]}"
  fi
fi

# --- 2. /dev/kvm access for the qemu user -------------------------------------
# Without udev (containers, no systemd) /dev/kvm stays root:root 0600 and qemu,
# which libvirtd runs as libvirt-qemu, cannot open it. Done before libvirtd
# starts so its capability probe sees KVM.
if [ -e /dev/kvm ]; then
  getent group kvm >/dev/null || groupadd --system kvm
  id -nG libvirt-qemu 2>/dev/null | grep -qw kvm || usermod -aG kvm libvirt-qemu
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  log "/dev/kvm: $(stat -c '%U:%G %a' /dev/kvm)"
else
  log "/dev/kvm absent: guests will run under TCG only"
fi

# --- 3. qemu.conf ---------------------------------------------------------------
# Debian's default /etc/libvirt/qemu.conf (everything commented out) works with a
# root-launched libvirtd: qemu runs as libvirt-qemu:libvirt-qemu and libvirt
# chowns disk/kernel images for it (dynamic_ownership). Nothing to change; we
# only check that nobody left an uncommented user/group that does not exist.
for key in user group; do
  val=$(sed -n "s/^[[:space:]]*${key}[[:space:]]*=[[:space:]]*\"\(.*\)\".*/\1/p" /etc/libvirt/qemu.conf | tail -1)
  if [ -n "$val" ]; then
    getent passwd "$val" >/dev/null || getent group "$val" >/dev/null ||
      die "/etc/libvirt/qemu.conf: $key = \"$val\" does not exist"
  fi
done

# --- 4. virtlogd + libvirtd -------------------------------------------------------
bash "$REPO/scripts/start-libvirt.sh"

# --- 5. Python virtualenv -----------------------------------------------------------
if [ ! -f "$REPO/pyproject.toml" ]; then
  log "no pyproject.toml in $REPO yet: skipping virtualenv"
  exit 0
fi
PYTHON=${PYTHON:-/usr/bin/python3}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV ($PYTHON)"
  "$PYTHON" -m venv "$VENV"
fi
log "pip install -e '.[test]' into $VENV"
# compat mode: a plain path entry in a .pth file, instead of an import hook that every
# iaasctl process would load at start-up (9 ms of a 100 ms `iaasctl plan`).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${REPO}[test]" \
  --config-settings editable_mode=compat
# Byte-compile our modules, as a regular install does: the environment may say
# PYTHONDONTWRITEBYTECODE, and then every command would compile them again. The same
# for the methods @dataclass generates (controller/_methods.py).
"$VENV/bin/python" -m compileall -q "$REPO/controller"
"$VENV/bin/python" -c "from controller._methods import build; build()"
log "done"
