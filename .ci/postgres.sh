#!/usr/bin/env bash
# postgres.sh: a private, throw-away PostgreSQL server for the pgstore tests.
#
#   bash .ci/postgres.sh start          # prints the DSN on stdout
#   bash .ci/postgres.sh stop           # stops it and removes its folder
#   bash .ci/postgres.sh run CMD ARGS…  # start, run CMD with VIGO_TEST_POSTGRES_DSN set, stop;
#                                       # exits with CMD's status
#
# start creates a cluster with initdb in a new temporary folder, listening
# only on 127.0.0.1 (and a Unix socket inside that folder) on a free port,
# with trust authentication for the user "vigo" — acceptable only because
# nothing but this machine's loopback can reach it and it lives for one
# test run. It creates the database "vigo" and prints
#   postgres://vigo@127.0.0.1:PORT/vigo?sslmode=disable
# The folder is remembered in $VIGO_PG_STATE (default
# ${TMPDIR:-/tmp}/vigo-postgres.state) so that stop can find it.
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# "postgres" system user (runuser). The binaries are taken from $PG_BIN, or
# the newest /usr/lib/postgresql/*/bin; when there are none and we are root
# on Debian, the "postgresql" package is installed.
#
# Progress goes to stderr; only the DSN goes to stdout.
set -euo pipefail

state="${VIGO_PG_STATE:-${TMPDIR:-/tmp}/vigo-postgres.state}"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# newest_bin prints the newest /usr/lib/postgresql/*/bin, or nothing.
newest_bin() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/initdb" ]] && echo "$d"
	done | sort -V | tail -n 1
}

find_bin() {
	if [[ -n "${PG_BIN:-}" ]]; then
		[[ -x "$PG_BIN/initdb" ]] || die "PG_BIN=$PG_BIN has no initdb"
		echo "$PG_BIN"
		return
	fi
	local d
	d=$(newest_bin)
	if [[ -z "$d" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
		log "installing the postgresql package"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
		d=$(newest_bin)
	fi
	[[ -n "$d" && -x "$d/initdb" ]] || die "no PostgreSQL server binaries (apt-get install postgresql, or set PG_BIN)"
	echo "$d"
}

# as_pg runs a command as the user that owns the cluster.
as_pg() {
	if [[ "$(id -u)" == 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# free_port prints a loopback TCP port that nothing listens on now.
free_port() {
	local port
	for _ in $(seq 1 50); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return
		fi
	done
	die "no free port found"
}

start() {
	if [[ -s "$state" ]] && [[ -d "$(head -n 1 "$state")" ]]; then
		die "a server from $state is still running; run: $0 stop"
	fi
	local bin dir port attempt
	bin=$(find_bin)
	dir=$(mktemp -d "${TMPDIR:-/tmp}/vigo-pg.XXXXXX")
	chmod 0755 "$dir"
	if [[ "$(id -u)" == 0 ]]; then
		chown postgres: "$dir"
	fi
	as_pg "$bin/initdb" -D "$dir/data" -U vigo --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; rm -rf "$dir"; die "initdb failed"; }
	# A port picked free can be taken before the server binds it: retry.
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		# -k: the Unix socket lives in our folder (not /var/run/postgresql);
		# -h: TCP on loopback only.
		if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
			-o "-k $dir -h 127.0.0.1 -p $port" start >&2; then
			break
		fi
		log "start on port $port failed (attempt $attempt)"
		port=""
	done
	if [[ -z "$port" ]]; then
		cat "$dir/server.log" >&2 || true
		rm -rf "$dir"
		die "could not start PostgreSQL"
	fi
	printf '%s\n%s\n%s\n' "$dir" "$bin" "$port" >"$state"
	as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U vigo vigo >&2 || { stop; die "createdb failed"; }
	log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, folder $dir"
	echo "postgres://vigo@127.0.0.1:$port/vigo?sslmode=disable"
}

stop() {
	local dir="${1:-}" bin=""
	if [[ -z "$dir" && -s "$state" ]]; then
		dir=$(sed -n 1p "$state")
		bin=$(sed -n 2p "$state")
	fi
	[[ -n "$dir" ]] || { log "nothing to stop"; return 0; }
	[[ -n "$bin" ]] || bin=$(find_bin)
	if [[ -f "$dir/data/postmaster.pid" ]]; then
		as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || log "pg_ctl stop failed"
	fi
	case "$dir" in
	"${TMPDIR:-/tmp}"/vigo-pg.*) rm -rf "$dir" ;;
	*) log "not removing unexpected folder $dir" ;;
	esac
	rm -f "$state"
}

run() {
	[[ $# -gt 0 ]] || die "usage: $0 run CMD [ARGS…]"
	local dsn rc=0
	# A state file of its own, so that runs in parallel do not collide.
	state=$(mktemp "${TMPDIR:-/tmp}/vigo-postgres-run.XXXXXX")
	dsn=$(start)
	trap stop EXIT
	VIGO_TEST_POSTGRES_DSN="$dsn" "$@" || rc=$?
	return "$rc"
}

case "${1:-}" in
start) start ;;
stop) shift; stop "$@" ;;
run) shift; run "$@" ;;
*) die "usage: $0 start | stop [DIR] | run CMD [ARGS…]" ;;
esac
