#!/usr/bin/env bash
# Builds dist/sockshim_VERSION_ARCH.deb and dist/sockshim-VERSION.ARCH.rpm:
# the binary (version from git describe), man pages from Markdown, then nfpm.
# Installs go-md2man and nfpm (pinned) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM_VERSION=v2.45.2
GOBIN="$(go env GOPATH)/bin"
export PATH="$GOBIN:$PATH"

# A Debian/RPM-friendly version: a tag v1.2.3 gives 1.2.3; otherwise
# 0.1.0~git<commits>.<hash>, which sorts below the first 0.1.0 release.
if desc=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	VERSION=${desc#v}
	VERSION=${VERSION//-/.}
else
	VERSION="0.1.0~git$(git rev-list --count HEAD).$(git rev-parse --short=8 HEAD)"
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	VERSION="$VERSION.dirty"
fi
export VERSION=${SOCKSHIM_VERSION:-$VERSION}
export ARCH=${ARCH:-$(go env GOARCH)}
DIST=${DIST:-dist}

command -v go-md2man >/dev/null || go install github.com/cpuguy83/go-md2man/v2@v2.0.7
"$GOBIN/nfpm" --version 2>/dev/null | grep -q "${NFPM_VERSION#v}" || go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"

# nfpm.yaml names its sources under dist/; a different DIST gets a copy of
# the config with those paths rewritten.
rm -rf "$DIST" && mkdir -p "$DIST/man"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$DIST/sockshim" ./cmd/sockshim
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$DIST/sockshim-handoff" ./cmd/sockshim-handoff
for page in packaging/man/*.md; do
	out="$DIST/man/$(basename "$page" .md)"
	go-md2man -in "$page" -out "$out"
	gzip -9n "$out"
done
config=nfpm.yaml
if [ "$DIST" != dist ]; then
	config="$DIST/nfpm.yaml"
	sed "s|src: dist/|src: $DIST/|" nfpm.yaml >"$config"
fi
nfpm package --config "$config" --packager deb --target "$DIST/"
nfpm package --config "$config" --packager rpm --target "$DIST/"
ls -l "$DIST"/*.deb "$DIST"/*.rpm
