#!/usr/bin/env bash
# Makes a test initramfs: the product's (--base) with the given tools
# appended as a second gzip'd cpio archive, installed in /usr/bin under their
# file names. The kernel unpacks concatenated archives in order.
# usage: append-tools.sh --base ROOTFS.cpio.gz --out OUT.cpio.gz TOOL...
set -euo pipefail
base= out=
while (($#)); do
    case "$1" in
    --base) base=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) break ;;
    esac
done
[[ -n $base && -n $out && $# -gt 0 ]] || { echo "usage: $0 --base FILE --out FILE TOOL..." >&2; exit 2; }
stage=$(mktemp -d "${out}.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/usr/bin"
for tool in "$@"; do install -m 0755 "$tool" "$stage/usr/bin/$(basename "$tool")"; done
{
    cat "$base"
    (cd "$stage" && find usr/bin -mindepth 1 -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --owner=0:0 --quiet | gzip -6)
} >"$out.tmp"
mv -f "$out.tmp" "$out"
