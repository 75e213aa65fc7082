#!/usr/bin/env bash
# Lays out the file tree of the vigo-enroll container image in DIR: static
# binaries, the agent builds for every platform with their manifest, CA
# certificates, a non-root user and the data folder. Both Dockerfile (in its
# golang build stage) and `make image` (on the host, for Dockerfile.local)
# run it, so both images hold the same tree.
# Usage: .ci/image-rootfs.sh DIR VERSION   (GOARCH: the image's architecture)
set -euo pipefail
root=${1:?usage: image-rootfs.sh DIR VERSION}
version=${2:?usage: image-rootfs.sh DIR VERSION}
go=${GO:-go}
arch=${GOARCH:-$("$go" env GOARCH)}
certs=${CA_CERTIFICATES:-/etc/ssl/certs/ca-certificates.crt}
uid=10001

rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/usr/share/vigo" "$root/etc/ssl/certs" "$root/etc/vigo" "$root/srv/vigo" "$root/srv/shared" "$root/tmp"

echo "build vigosrv, vigocli (linux/$arch, static)"
# CGO_ENABLED=0: the image has no C library; SQLite is pure Go (modernc).
CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$go" build -trimpath -ldflags "-s -w -X github.com/vigo-enroll/vigo/agent.Version=$version" \
	-o "$root/usr/local/bin/" ./cmd/vigosrv ./cmd/vigocli

bash "$(dirname "$0")/dist.sh" "$root/usr/share/vigo/dist" "$version"

cp "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
cp examples/container/server.yaml "$root/etc/vigo/server.yaml"
# The user the server runs as; no shell, no home but its data.
printf 'root:x:0:0:root:/:/sbin/nologin\nvigo:x:%d:%d:Vigo Enroll:/srv/vigo:/sbin/nologin\n' "$uid" "$uid" >"$root/etc/passwd"
printf 'root:x:0:\nvigo:x:%d:\n' "$uid" >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0755 "$root" "$root/usr" "$root/usr/local" "$root/usr/local/bin" "$root/usr/share" "$root/usr/share/vigo" "$root/etc" "$root/etc/vigo" "$root/srv"
chmod 1777 "$root/tmp"
# Chowned to vigo by the Dockerfile's COPY --chown: the data folder, and
# /srv/shared for files several replicas share (a volume; examples/compose).
chmod 0700 "$root/srv/vigo" "$root/srv/shared"
chmod -R a+rX "$root/usr" "$root/etc"
