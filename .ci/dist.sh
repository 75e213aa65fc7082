#!/usr/bin/env bash
# Cross-compiles the agent for every supported platform into DIR and writes
# DIR/manifest.json (version, sha256, size per file).
# Usage: .ci/dist.sh DIR VERSION   (PLATFORMS="linux/amd64 ..." overrides the list)
set -euo pipefail
dir=${1:?usage: dist.sh DIR VERSION}
version=${2:?usage: dist.sh DIR VERSION}
go=${GO:-go}
platforms=${PLATFORMS:-"linux/amd64 linux/arm64 linux/arm linux/386 darwin/amd64 darwin/arm64 freebsd/amd64 freebsd/arm64 openbsd/amd64 netbsd/amd64 illumos/amd64 windows/amd64 windows/arm64"}
mkdir -p "$dir"
for p in $platforms; do
	os=${p%/*} arch=${p#*/} ext=
	[ "$os" = windows ] && ext=.exe
	echo "build $os/$arch"
	# No -trimpath: it drops -ldflags from the build info, where "dist manifest" reads the version.
	# GOARM=6: the arm build also runs on ARMv6 (Raspberry Pi 1/Zero).
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOARM=6 \
		"$go" build -ldflags "-s -w -X github.com/vigo-enroll/vigo/agent.Version=$version" -o "$dir/vigo-$os-$arch$ext" ./cmd/vigo
done
"$go" run ./cmd/vigocli dist manifest --dir "$dir" --version "$version"
