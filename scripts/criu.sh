#!/usr/bin/env bash
# Installs CRIU 4.1.1 into Warren's own prefix (/opt/warren/criu), built from Debian's source
# package (idempotent; quiet when it is already there). Debian 12's own criu (3.17) cannot dump on
# newer kernels ("vdso: Unexpected rt vDSO area bounds"), and Debian 13's binary needs a newer
# glibc, so the source of Debian 13's package is built here against Debian 12's libraries. The
# system's criu, apt sources and lists are left alone: the source is fetched with a private apt
# configuration under /var/cache/warren.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=4.1.1
prefix=/opt/warren/criu
# Warren's own fixes to the source, by name; a build without all of them is rebuilt.
fixes="passcred-eopnotsupp kdat-cache-in-dev-shm lazy-pages-in-userns tmpfs-plain-tar populate-before-read restore-lock-skip"
if [ -x "$prefix/sbin/criu" ] && "$prefix/sbin/criu" --version 2>/dev/null | grep -q "Version: $version" &&
    [ "$(cat "$prefix/fixes" 2>/dev/null)" = "$fixes" ]; then
    exit 0
fi
echo "building CRIU $version into $prefix (once)" >&2
need=()
for pkg in build-essential pkg-config python3 libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev \
    protobuf-compiler libnl-3-dev libnet1-dev libcap-dev libbsd-dev libgnutls28-dev libnftables-dev \
    libaio-dev xz-utils patch; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cache=/var/cache/warren/criu
mkdir -p "$cache/apt/lists/partial" "$cache/apt/archives/partial" "$cache/src"
tarball="$cache/src/criu_$version.orig.tar.xz"
if [ ! -s "$tarball" ]; then
    echo "deb-src http://deb.debian.org/debian trixie main" > "$cache/apt/sources.list"
    apt_private=(-o "Dir::Etc::SourceList=$cache/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache::Archives=$cache/apt/archives"
        -o "APT::Get::List-Cleanup=0")
    apt-get "${apt_private[@]}" update -qq
    (cd "$cache/src" && apt-get "${apt_private[@]}" source --download-only "criu=$version*" >/dev/null 2>&1 ||
        apt-get "${apt_private[@]}" source --download-only criu >/dev/null 2>&1 || true)
    if [ ! -s "$tarball" ]; then
        echo "criu.sh: Debian's source for criu $version was not found (have: $(ls "$cache/src"))" >&2
        exit 1
    fi
fi
build=$(mktemp -d /tmp/warren-criu.XXXXXX)
trap 'rm -rf "$build"' EXIT
tar -xJf "$tarball" -C "$build"
cd "$build"/criu-*
# passcred-eopnotsupp: Linux 6.16 and newer answer EOPNOTSUPP when asked for SO_PASSCRED or
# SO_PASSSEC on sockets other than unix and netlink ones, and CRIU 4.1.1 takes that answer for a
# failed dump (of any process holding a TCP socket). Such a socket cannot have the option set, so
# "off" is its true value.
for opt in SO_PASSCRED SO_PASSSEC; do
    sed -i "s/^\tret |= dump_opt(sk, SOL_SOCKET, $opt, &val);\$/\tval = 0;\n\tif (getsockopt(sk, SOL_SOCKET, $opt, \&val, \&(socklen_t){ sizeof(val) }) < 0 \&\& errno != EOPNOTSUPP)\n\t\tret |= dump_opt(sk, SOL_SOCKET, $opt, \&val);/" criu/sockets.c
done
if [ "$(grep -c 'errno != EOPNOTSUPP' criu/sockets.c)" -ne 2 ]; then
    echo "criu.sh: the passcred-eopnotsupp fix no longer applies to criu/sockets.c" >&2
    exit 1
fi
# lazy-pages-in-userns: a lazy restore has each restored task open its own userfaultfd, which a
# task in a user namespace may not do while vm.unprivileged_userfaultfd is 0 (Debian's default);
# criu opens /dev/userfaultfd itself and the tasks make their descriptor through it.
patch -s -p1 < "$here/criu-lazy-pages-in-userns.patch"
# tmpfs-plain-tar: a sandbox has four tmpfs mounts (/dev, /dev/shm, /tmp, /proc/acpi) and CRIU runs
# tar and gzip for each on every dump and restore (≈ 14 ms of CPU per restore here). Their images
# stay on local disk, so gzip buys nothing; an empty tmpfs is saved as an empty image and needs no
# tar at all. Restores still read gzipped images made by other builds.
patch -s -p1 < "$here/criu-tmpfs-plain-tar.patch"
# populate-before-read: a restore that is not lazy reads each process's pages into fresh memory,
# taking one page fault per page; asking for the pages first (MADV_POPULATE_WRITE) costs a third
# less CPU on these virtual machines (≈ 0.38 vs 0.54 s per GiB).
patch -s -p1 < "$here/criu-populate-before-read.patch"
# restore-lock-skip: a restore takes the network-lock method from the dump's inventory, even when
# told to skip it (Warren keeps packets away from a restoring sandbox itself), and so unlocked an
# nftables lock that its fresh network namespace never had: a libnftables run and ≈ 10 ms
# waiting to close its netlink socket, on every restore.
patch -s -p1 < "$here/criu-restore-lock-skip.patch"
# Only the criu binary: no docs (asciidoc), no Python bindings, no compel plugins beyond its own.
# kdat-cache-in-dev-shm: CRIU probes the kernel's features on every run (≈ 20 ms here) unless it
# finds its cache, which it keeps only on a tmpfs; /run is not one on these hosts, /dev/shm is.
make -j"$(nproc)" RUNDIR=/dev/shm criu >/dev/null 2>"$build/make.log" || { tail -30 "$build/make.log" >&2; exit 1; }
install -D -m 0755 criu/criu "$prefix/sbin/criu.new"
mv -f "$prefix/sbin/criu.new" "$prefix/sbin/criu"
echo "$fixes" > "$prefix/fixes"
"$prefix/sbin/criu" --version >&2
