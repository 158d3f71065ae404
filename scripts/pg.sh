#!/usr/bin/env bash
# A throwaway local PostgreSQL for the oracle's database tests.
#
#   scripts/pg.sh          install if missing, init + start the cluster, print its SQLAlchemy URL
#   scripts/pg.sh url      print the URL if the cluster is running (nothing otherwise)
#   scripts/pg.sh stop     stop the cluster (its data stays where `scripts/pg.sh dir` says)
#   scripts/pg.sh dir      print the cluster's folder
#
# The cluster lives outside the checkout, in /var/tmp/tributa-pg-<hash of the checkout's path>
# (or $TRIBUTA_PG_DIR): the server runs as the `postgres` user, which cannot enter a checkout
# in a private (0700) folder. It listens on 127.0.0.1 only (port 55432, or a free one when that
# is taken) and trusts local connections: it is for tests, never for real data.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGROOT="${TRIBUTA_PG_DIR:-/var/tmp/tributa-pg-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)}"
DATA="$PGROOT/data"
PORT_FILE="$PGROOT/port"
LOG="$PGROOT/postgres.log"
DB_NAME="tributa_test"

say() { echo "pg.sh: $*" >&2; }

pg_bindir() {
    local ctl
    ctl="$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1 || true)"
    [[ -n "$ctl" ]] && dirname "$ctl"
}

# initdb and postgres refuse to run as root: run them as the `postgres` user then.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        # From /: postgres cannot enter a 0700 checkout, and its tools warn (or fail) when they
        # cannot change back into the directory they were started from.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running() {
    local bin
    bin="$(pg_bindir)" || return 1
    [[ -n "$bin" && -f "$DATA/PG_VERSION" ]] && as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

url() {
    echo "postgresql+psycopg2://postgres@127.0.0.1:$(cat "$PORT_FILE")/$DB_NAME"
}

install_if_missing() {
    if [[ -z "$(pg_bindir)" ]]; then
        say "PostgreSQL not found; installing Debian's package (needs root and network)"
        if [[ $EUID -ne 0 ]]; then
            say "run as root, or install it yourself: apt-get install -y postgresql"
            exit 1
        fi
        apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq postgresql >&2
    fi
}

start() {
    install_if_missing
    local bin
    bin="$(pg_bindir)"
    if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        say "no 'postgres' user to run the server as; reinstall the postgresql package"
        exit 1
    fi
    mkdir -p "$PGROOT"
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        rm -rf "$DATA"
        mkdir -p "$DATA"
        [[ $EUID -eq 0 ]] && chown -R postgres: "$PGROOT"
        say "initialising a cluster in $DATA"
        as_pg "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-sync >"$PGROOT/initdb.log" 2>&1 \
            || { say "initdb failed; see $PGROOT/initdb.log"; exit 1; }
    fi
    [[ $EUID -eq 0 ]] && chown -R postgres: "$PGROOT"
    if ! running; then
        local port=55432
        if [[ -f "$PORT_FILE" ]]; then port="$(cat "$PORT_FILE")"; fi
        if ! port_free "$port"; then
            port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        fi
        echo "$port" >"$PORT_FILE"
        # A test cluster: durability across OS crashes is traded for speed (fsync off).
        as_pg "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start \
            -o "-p $port -c listen_addresses=127.0.0.1 -k $DATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >/dev/null || { say "postgres did not start; see $LOG"; exit 1; }
        say "postgres running on 127.0.0.1:$port (stop it with scripts/pg.sh stop)"
    fi
    local port
    port="$(cat "$PORT_FILE")"
    if [[ "$(as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]]; then
        as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME"
    fi
    url
}

stop() {
    local bin
    bin="$(pg_bindir)"
    if running; then
        as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        say "stopped"
    else
        say "not running"
    fi
}

case "${1:-start}" in
    start) start ;;
    url) if running && [[ -f "$PORT_FILE" ]]; then url; fi ;;
    stop) stop ;;
    dir) echo "$PGROOT" ;;
    *) say "usage: scripts/pg.sh [start|url|stop|dir]"; exit 2 ;;
esac
