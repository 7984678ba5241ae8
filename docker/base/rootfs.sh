#!/bin/sh
# The root file system of the local base image: Debian bookworm, minbase variant, made with
# debootstrap from Debian's own mirror, so no image registry is needed. `make images`
# imports it as kec-base:bookworm (devkit/images.py); it stands in for the public
# debian:bookworm-slim and python:3.11-slim-bookworm images the Dockerfiles name by default.
#
#   sh docker/base/rootfs.sh DIR [MIRROR]      (as root; DIR must not exist yet)
set -eu
dir=$1
mirror=${2:-http://deb.debian.org/debian}
security=${KEC_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

debootstrap --variant=minbase bookworm "$dir" "$mirror"

# The same sources a Debian container image has: the release, its updates and security.
rm -f "$dir/etc/apt/sources.list"
cat > "$dir/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# As in Debian's slim images: no documentation, manual pages or translations, now or in
# packages installed later, and apt keeps neither downloaded packages nor its lists.
cat > "$dir/etc/dpkg/dpkg.cfg.d/slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
SLIM
cat > "$dir/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
cat > "$dir/etc/apt/apt.conf.d/docker-no-recommends" <<'NOREC'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
NOREC
find "$dir/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
# Files only: some packages' scripts (Java's alternatives) expect the man folders to exist.
find "$dir/usr/share/man" "$dir/usr/share/info" "$dir/usr/share/lintian" ! -type d -delete
find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$dir/var/cache/apt/"*.bin "$dir/var/cache/apt/archives/"*.deb "$dir/var/lib/apt/lists/"*
rm -rf "$dir/var/log/"* "$dir/tmp/"* "$dir/var/tmp/"*
# debootstrap copies the building machine's resolver and host name; Docker provides its own.
rm -f "$dir/etc/resolv.conf" "$dir/etc/hostname"
