# A throwaway PostgreSQL cluster for the test suite and the benchmarks.
# start_postgres: installs the server from Debian's packages when it is missing, starts a
# cluster in a temporary folder on a free loopback port and exports PARLEY_PG_ADMIN_URL.
# stop_postgres: stops it and removes the folder.
# PARLEY_PG_DURABLE=1 keeps PostgreSQL's durable defaults (fsync, synchronous commit), as the
# benchmarks need; the tests turn them off for speed.

pg_bindir() {
    local d
    for d in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin; do
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a command as the cluster's owner: PostgreSQL refuses to run as root.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    if ! pg_bindir >/dev/null; then
        echo "installing PostgreSQL from Debian's packages" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local bindir
    bindir=$(pg_bindir)
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    PARLEY_PG_DIR=$(mktemp -d /tmp/parley-pg.XXXXXX)
    export PARLEY_PG_DIR
    [ "$(id -u)" = 0 ] && chown postgres "$PARLEY_PG_DIR"
    local port durability=""
    port=$(free_port)
    if [ "${PARLEY_PG_DURABLE:-0}" != 1 ]; then
        durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    as_pg_user "$bindir/initdb" -D "$PARLEY_PG_DIR/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
    as_pg_user "$bindir/pg_ctl" -D "$PARLEY_PG_DIR/data" -l "$PARLEY_PG_DIR/server.log" -w -t 60 \
        -o "-p $port -k $PARLEY_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 $durability" \
        start >/dev/null
    PARLEY_PG_BINDIR=$bindir
    export PARLEY_PG_BINDIR
    PARLEY_PG_PORT=$port
    export PARLEY_PG_PORT
    PARLEY_PG_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
    export PARLEY_PG_ADMIN_URL
    echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

stop_postgres() {
    if [ -n "${PARLEY_PG_DIR:-}" ] && [ -d "$PARLEY_PG_DIR/data" ]; then
        as_pg_user "$PARLEY_PG_BINDIR/pg_ctl" -D "$PARLEY_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PARLEY_PG_DIR"
    fi
}
