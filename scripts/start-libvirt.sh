#!/usr/bin/env bash
# Start virtlogd and libvirtd (qemu:///system) unless they run, and wait until libvirtd
# answers. Under systemd: systemctl. Without (containers, CI): the daemons directly,
# libvirtd under a subreaper (see below). Used by setup-host.sh, and by the test that
# kills libvirtd and starts it again.
set -euo pipefail

URI=qemu:///system
log() { printf '==> start-libvirt: %s\n' "$*"; }
die() { printf 'start-libvirt: ERROR: %s\n' "$*" >&2; exit 1; }

running() {  # running NAME: its pid file points at a live process
  [ -s "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null
}
if [ -d /run/systemd/system ]; then
  log "systemd: enabling virtlogd libvirtd"
  systemctl enable --now virtlogd libvirtd
else
  # No systemd (containers, CI): start the daemons ourselves, virtlogd first
  # (qemu's serial/console logs go through it).
  if running virtlogd; then
    log "virtlogd already running"
  else
    log "starting virtlogd -d"
    virtlogd -d || log "WARNING: virtlogd -d failed"
  fi
  # libvirtd daemonizes qemu and dnsmasq, so they are orphans: when one exits, only
  # whoever reaps orphans lets libvirt see it gone. systemd does at once; the PID 1 of
  # a container or micro-VM may not (on these machines it reaps every 2 s, and each
  # `virsh destroy` waited that long). Under `tini -s` (a subreaper) they are reaped
  # at once, as on a systemd host.
  if running libvirtd || virsh -c "$URI" version >/dev/null 2>&1; then
    log "libvirtd already running"
    parent=$(ps -o ppid= -p "$(cat /run/libvirtd.pid 2>/dev/null || echo 1)" 2>/dev/null | tr -d ' ')
    [ "$parent" = 1 ] && log "note: libvirtd runs without a subreaper; stop it and run this again to start it under tini"
  else
    log "starting libvirtd under tini -s"
    mkdir -p /var/log/libvirt
    setsid tini -s -- libvirtd </dev/null >>/var/log/libvirt/libvirtd-stdio.log 2>&1 &
  fi
fi
log "waiting for libvirtd at $URI"
for i in $(seq 60); do
  virsh -c "$URI" version >/dev/null 2>&1 && break
  [ "$i" = 60 ] && die "libvirtd did not answer on $URI within 30 s: $(virsh -c "$URI" version 2>&1 | tail -1)"
  sleep 0.5
done
log "$(virsh -c "$URI" version | grep -i 'running hypervisor' || true)"
