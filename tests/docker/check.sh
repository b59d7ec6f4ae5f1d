#!/usr/bin/env bash
# tests/docker/check.sh FORKVM_BINARY — no Docker engine runs here, so this
# checks what can be checked without one, the things that would silently rot:
#  1. docker/Dockerfile installs packages only from the two lists in scripts/:
#     the build stage through scripts/bootstrap (scripts/packages), the
#     runtime stage from scripts/packages-runtime; no package is named inline.
#  2. Every package of scripts/packages-runtime is a real Debian 12 package
#     (installed on this machine, which bootstrap made from the same lists).
#  3. Every shared library the built binary loads belongs to a package of
#     scripts/packages-runtime, so the runtime image can start it.
#  4. docker/compose.yaml builds that Dockerfile and passes /dev/kvm through.
set -euo pipefail
export LC_ALL=C
binary=${1:?usage: check.sh FORKVM_BINARY}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dockerfile=$root/docker/Dockerfile
compose=$root/docker/compose.yaml
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
list_of() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$' | sort -u; }

# 1. Package sources. Join continuation lines so one RUN is one line.
joined=$(sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' "$dockerfile")
grep -Eq '^RUN scripts/bootstrap( |$)' <<<"$joined" || fail "the build stage does not run scripts/bootstrap"
grep -q 'COPY scripts/packages scripts/bootstrap scripts/' <<<"$joined" ||
    fail "the build stage does not copy scripts/packages and scripts/bootstrap"
installs=$(grep -c 'apt-get install' <<<"$joined" || true)
[[ $installs == 1 ]] || fail "expected exactly one apt-get install (the runtime stage), found $installs"
grep 'apt-get install' <<<"$joined" | grep -q "\$(sed -e 's/#.\*//' /tmp/packages-runtime)" ||
    fail "the runtime apt-get install does not take its packages from scripts/packages-runtime"
grep -q 'COPY scripts/packages-runtime /tmp/packages-runtime' <<<"$joined" ||
    fail "the runtime stage does not copy scripts/packages-runtime"
# Nothing but options and that list may follow "apt-get install".
extra=$(grep 'apt-get install' <<<"$joined" | sed -e 's/.*apt-get install//' -e 's/&&.*//' \
    -e "s|\$(sed -e 's/#.\*//' /tmp/packages-runtime)||" | tr ' ' '\n' | grep -v -e '^-' -e '^$' || true)
[[ -z $extra ]] || fail "the Dockerfile names packages inline: $(tr '\n' ' ' <<<"$extra")"

# 2. Runtime packages exist in Debian 12 (and are the versions we build against).
runtime=$(list_of "$root/scripts/packages-runtime")
for p in $runtime; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || fail "runtime package $p is not an installed Debian package here"
done

# 3. Shared libraries of the binary.
[[ -x $binary ]] || fail "no binary at $binary"
libs=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
[[ -n $libs ]] || fail "ldd found no shared library in $binary"
for lib in $libs; do
    real=$(readlink -f "$lib")
    owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || true)
    owner=${owner%%:*}
    if [[ -z $owner ]]; then
        fail "$lib ($real) belongs to no Debian package"
    elif ! grep -qx "$owner" <<<"$runtime"; then
        fail "$lib comes from $owner, which scripts/packages-runtime does not list"
    fi
done

# 4. Compose.
grep -q 'dockerfile: docker/Dockerfile' "$compose" || fail "compose.yaml does not build docker/Dockerfile"
grep -q -- '- /dev/kvm:/dev/kvm' "$compose" || fail "compose.yaml does not pass /dev/kvm through"
grep -q '/var/lib/forkvm' "$compose" || fail "compose.yaml has no volume for /var/lib/forkvm"

if ((failures)); then
    echo "docker check: $failures problem(s)" >&2
    exit 1
fi
echo "docker check: Dockerfile, compose file and package lists agree ($(wc -w <<<"$libs") libraries checked)"
