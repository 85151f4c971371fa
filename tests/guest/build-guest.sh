#!/usr/bin/env bash
# Build the tiny test guest: a Debian cloud kernel plus a busybox initramfs.
#
#   build-guest.sh [OUTDIR]     (or env IAASCTL_GUEST_DIR; FORCE=1 rebuilds)
#
# Outputs OUTDIR/vmlinuz and OUTDIR/initrd.gz, for direct kernel boot with
# cmdline "console=ttyS0". The guest's /init prints these lines on ttyS0:
#   IAASCTL-GUEST-BOOTED         modules loaded
#   IAASCTL-GUEST-IP <ip>        udhcpc got a lease on eth0 (again on renew)
#   IAASCTL-SEED <line>          each line of meta-data from a "cidata" ISO
#   IAASCTL-USERDATA <line>      each line of user-data from it
#   IAASCTL-SEED-NONE            no cidata ISO found
# and powers off on the ACPI power button (virsh shutdown).
set -euo pipefail
umask 022

OUT=${1:-${IAASCTL_GUEST_DIR:-/var/lib/iaasctl-test/guest}}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
log() { printf '==> build-guest: %s\n' "$*"; }

mkdir -p "$OUT"
exec 9>"$OUT/.lock" && flock 9          # concurrent callers build once
if [ -z "${FORCE:-}" ] && [ "$OUT/vmlinuz" -nt "$SELF" ] && [ "$OUT/initrd.gz" -nt "$SELF" ]; then
  log "up to date"; echo "$OUT/vmlinuz"; echo "$OUT/initrd.gz"; exit 0
fi

# Modules to load, in this order; their dependencies (read from each .ko's
# modinfo) are loaded first automatically. The last line is optional extras:
# IDE cdrom (/dev/sr0), virtio-scsi, and the ACPI power button.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  failover net_failover virtio_net virtio_blk cdrom isofs
  ata_piix sr_mod virtio_scsi button evdev"

TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
chmod 0755 "$TMP"     # apt downloads as user _apt into debs/
mkdir "$TMP/debs" "$TMP/pkg" "$TMP/root"

# --- fetch and unpack the Debian packages ------------------------------------
apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 || apt-get -q update
# The metapackage only depends on the versioned package with kernel + modules.
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')
[ -n "$KPKG" ] || { echo "cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
log "downloading $KPKG busybox-static"
chown _apt "$TMP/debs" 2>/dev/null || true
(cd "$TMP/debs" && apt-get -q download "$KPKG" busybox-static)
for deb in "$TMP"/debs/*.deb; do dpkg -x "$deb" "$TMP/pkg"; done
KVER=$(ls "$TMP/pkg/lib/modules")
MODDIR=$TMP/pkg/lib/modules/$KVER

# --- initramfs tree ------------------------------------------------------------
R=$TMP/root
mkdir -p "$R"/{bin,dev,proc,sys,mnt/seed,etc,lib/modules}
cp "$TMP/pkg/bin/busybox" "$R/bin/busybox"
for applet in $("$R/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$R/bin/$applet"
done

declare -A SEEN=()
ORDER=()
add_module() {  # add_module NAME: copy NAME.ko after its dependencies
  local m=${1//-/_} ko dep
  [ -n "${SEEN[$m]:-}" ] && return; SEEN[$m]=1
  ko=$(find "$MODDIR/kernel" -name "$m.ko" -o -name "${m//_/-}.ko" | head -1)
  if [ -z "$ko" ]; then
    if grep -Eq "/($m|${m//_/-})\.ko\$" "$MODDIR/modules.builtin"; then
      log "module $m: built into the kernel"
    else
      log "WARNING: module $m: neither a module nor built in, skipped"
    fi
    return
  fi
  for dep in $(tr '\0' '\n' < "$ko" | sed -n 's/^depends=//p' | tr ',' ' '); do add_module "$dep"; done
  cp "$ko" "$R/lib/modules/$m.ko"
  ORDER+=("$m")
}
for m in $MODULES; do add_module "$m"; done
printf '%s\n' "${ORDER[@]}" > "$R/etc/modules"
log "modules (load order): ${ORDER[*]}"

cat > "$R/etc/udhcpc.sh" <<'SCRIPT'
#!/bin/sh
# udhcpc hook: configure eth0 from the lease and report the address.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "IAASCTL-GUEST-IP $ip" > /dev/ttyS0 ;;
esac
exit 0
SCRIPT

cat > "$R/init" <<'SCRIPT'
#!/bin/sh
# PID 1 of the iaasctl test guest. Markers go to ttyS0, where the tests read them.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/printk      # keep kernel chatter off the console
say() { echo "$*" > /dev/ttyS0; }

for m in $(cat /etc/modules); do
  insmod "/lib/modules/$m.ko" || say "IAASCTL-GUEST-WARN insmod $m failed"
done
say IAASCTL-GUEST-BOOTED

# Power off on the ACPI power button, so "virsh shutdown" works.
for ev in /sys/class/input/event*; do
  [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ] || continue
  (head -c 1 "/dev/input/${ev##*/}" >/dev/null && say IAASCTL-GUEST-POWEROFF && poweroff -f) &
done

# DHCP on eth0: udhcpc retries forever in the foreground and renews the lease;
# the outer loop only guards against it exiting.
ip link set lo up
ip link set eth0 up
(while :; do udhcpc -f -i eth0 -s /etc/udhcpc.sh -t 5 -T 2 -A 1 >/dev/null 2>&1; sleep 1; done) &

# cloud-init NoCloud seed: an ISO labelled cidata (cdrom or virtio disk).
dev=
for i in 1 2 3; do
  dev=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null) && break
  sleep 1
done
if [ -n "$dev" ] && mount -t iso9660 -o ro "$dev" /mnt/seed; then
  sed 's/^/IAASCTL-SEED /' /mnt/seed/meta-data > /dev/ttyS0
  [ -f /mnt/seed/user-data ] && sed 's/^/IAASCTL-USERDATA /' /mnt/seed/user-data > /dev/ttyS0
else
  say IAASCTL-SEED-NONE
fi

while :; do sleep 3600; done
SCRIPT
chmod 0755 "$R/init" "$R/etc/udhcpc.sh"

# --- write outputs (atomically, readable by libvirt-qemu) ---------------------------
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9 -n) > "$OUT/.initrd.gz.new"
cp "$TMP/pkg/boot/vmlinuz-$KVER" "$OUT/.vmlinuz.new"
printf 'kernel_package=%s\nkernel_version=%s\nmodules=%s\n' "$KPKG" "$KVER" "${ORDER[*]}" > "$OUT/.build-info.new"
chmod 0644 "$OUT"/.*.new
mv "$OUT/.vmlinuz.new" "$OUT/vmlinuz"
mv "$OUT/.initrd.gz.new" "$OUT/initrd.gz"
mv "$OUT/.build-info.new" "$OUT/build-info"
chmod 0755 "$OUT"
if command -v runuser >/dev/null && id libvirt-qemu >/dev/null 2>&1 &&
   ! runuser -u libvirt-qemu -- test -r "$OUT/initrd.gz"; then
  log "WARNING: libvirt-qemu cannot read $OUT (a parent directory is not searchable?)"
fi
log "built for $KPKG ($KVER)"
echo "$OUT/vmlinuz"
echo "$OUT/initrd.gz"
