#!/bin/sh
# A disposable cluster per container: initdb, the database, then the server in the foreground.
set -eu
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    "$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
        | "$bin/postgres" --single -D "$PGDATA" -c unix_socket_directories= postgres >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA" -p "$POSTGRES_PORT" -c "listen_addresses=$POSTGRES_HOST" \
    -c unix_socket_directories=/tmp -c fsync=off -c synchronous_commit=off -c full_page_writes=off
