#!/usr/bin/env bash
# Builds the guest's initramfs: Debian's busybox-static, our static agent,
# /init, a minimal /etc with root and an unprivileged "user" (uid 1000), and
# the guest kernel's virtio modules that /init loads for the virtio console
# (the agent channel), from --modules (the kernel's /lib/modules/<release>).
# usage: build-initramfs.sh --agent PATH --init PATH --modules DIR --out FILE.cpio.gz
set -euo pipefail
agent= init= out= modules=
# In load order: each after what it depends on (modinfo -F depends).
virtio_modules=(drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko drivers/virtio/virtio_pci_modern_dev.ko
    drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci.ko drivers/char/virtio_console.ko)
while (($#)); do
    case "$1" in
    --agent) agent=$2; shift 2 ;;
    --modules) modules=$2; shift 2 ;;
    --init) init=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "build-initramfs: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ -n $agent && -n $init && -n $out && -n $modules ]] ||
    { echo "usage: $0 --agent PATH --init PATH --modules DIR --out FILE" >&2; exit 2; }
for m in "${virtio_modules[@]}"; do
    [[ -f $modules/kernel/$m ]] || { echo "build-initramfs: $modules/kernel/$m is missing (scripts/bootstrap installs linux-image-amd64)" >&2; exit 1; }
done
busybox=$(command -v busybox) || { echo "build-initramfs: busybox-static is missing (scripts/bootstrap)" >&2; exit 1; }
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || [[ ! -x /usr/bin/file ]] ||
    { echo "build-initramfs: $busybox is not static (install busybox-static)" >&2; exit 1; }

stage=$(mktemp -d "${out}.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,home/user,var/tmp,lib/modules}
chmod 1777 "$stage/tmp" "$stage/var/tmp"
chmod 700 "$stage/root"
cp "$busybox" "$stage/bin/busybox"
# Applet links made now, not by `busybox --install` at every boot.
for applet in $("$busybox" --list-full); do
    [[ $applet == bin/busybox || -e $stage/$applet ]] || ln -s /bin/busybox "$stage/$applet"
done
install -s -m 0755 "$agent" "$stage/sbin/forkvm-agent"  # stripped: smaller image, faster load
install -m 0755 "$init" "$stage/init"
# /init loads them in the order of this list.
for m in "${virtio_modules[@]}"; do
    install -m 0644 "$modules/kernel/$m" "$stage/lib/modules/"
    basename "$m" >>"$stage/lib/modules/load-order"
done
cat >"$stage/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:sandbox user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$stage/etc/group" <<'G'
root:x:0:
tty:x:5:
user:x:1000:
nogroup:x:65534:
G
echo "127.0.0.1 localhost forkvm" >"$stage/etc/hosts"
# Device nodes come from devtmpfs; /dev/console is needed before it mounts.
# (cpio's newc format records nodes only with root; the kernel tolerates
# their absence.)
(cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --quiet | gzip -6) >"$out.tmp"
mv -f "$out.tmp" "$out"
