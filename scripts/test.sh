#!/usr/bin/env bash
# The whole test suite: formatting, vet, staticcheck, every test with the race
# detector (the end-to-end tests boot a real systemd user manager and need
# root), the package build and install tests (lintian, rpmlint, Debian 12 and
# 13 systems booted with systemd-nspawn), random schedules of the core state
# machine, and bounded fuzz runs of every decoder of outside input.
# Installs what it needs on Debian 12 when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# staticcheck 2026.2.2 is module version v0.8.2 (the proxy serves only the v0.x names).
STATICCHECK_VERSION=v0.8.2
# Each fuzz run stops after a number of executions, not after a time: Go
# 1.26's fuzz coordinator can report its own -fuzztime deadline as a failure
# when a worker is mid-input as it passes (go.dev/issue/75804, fixed in Go
# 1.27). 300,000 inputs take 3–17 s per target on this machine.
FUZZ_EXECS=${FUZZ_EXECS:-300000}

# command → Debian package, for everything the tests run.
need_pkgs=()
for pair in unshare:util-linux nsenter:util-linux systemctl:systemd systemd-analyze:systemd \
	systemd-nspawn:systemd-container debootstrap:debootstrap lintian:lintian rpmlint:rpmlint \
	rpm:rpm man:man-db runuser:util-linux git:git gunicorn:gunicorn lighttpd:lighttpd ss:iproute2 \
	node:nodejs nginx:nginx-light; do
	command -v "${pair%%:*}" >/dev/null || need_pkgs+=("${pair#*:}")
done
[ -x /usr/lib/systemd/systemd ] || need_pkgs+=(systemd)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "== installing ${need_pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${need_pkgs[@]}"
fi

go mod download
GOBIN="$(go env GOPATH)/bin"
if ! "$GOBIN/staticcheck" -version 2>/dev/null | grep -qF "(${STATICCHECK_VERSION#v})"; then
	go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi

echo "== gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "not gofmt'ed:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
"$GOBIN/staticcheck" ./...
echo "== go test -race (full log: test-output.log)"
status=0
go test -race -count=1 -timeout 70m -v ./... >test-output.log 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
	cat test-output.log
	exit "$status"
fi
# On success: every test's verdict and the figures the tests log.
grep -E '^(--- |ok |FAIL)|^ +[a-z_]+_test\.go:[0-9]+: ' test-output.log || true
echo "== random schedules of the supervisor's core, without the race detector (100,000)"
go test -count=1 -v -run '^TestRandomSchedules$' ./shim/core -args -schedules=100000 -schedule-budget=120s | grep -E '^(---|ok|FAIL)|schedules'
# Every fuzz target (each decoder of outside input), a bounded run each,
# found in the code so that none is missed when one moves; seed corpora live
# in each package's testdata/fuzz.
targets=$(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed -E 's|^\./(.*)/[^/]*:func (Fuzz.*)$|\1:\2|' | sort)
if [ -z "$targets" ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi
for target in $targets; do
	echo "== fuzz ${target#*:} in ./${target%%:*} ($FUZZ_EXECS inputs)"
	go test -run='^$' -fuzz="^${target#*:}\$" -fuzztime="${FUZZ_EXECS}x" "./${target%%:*}"
done
