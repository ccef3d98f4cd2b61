#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the catalog tests, and print its URL.
# Installs the server from Debian's packages when the machine lacks it. Usage: eval "$(.ci/postgres.sh)"
set -euo pipefail
PORT="${OPMAP_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql from Debian's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
fi
BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || command -v initdb)")"
id postgres >/dev/null 2>&1 || useradd --system --home /nonexistent postgres
DATA="$(mktemp -d /tmp/opmap-pg.XXXXXX)"
chown postgres "$DATA"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
as_pg "'$BIN/initdb' -D '$DATA/db' -U opmap --auth=trust >/dev/null"
as_pg "'$BIN/pg_ctl' -D '$DATA/db' -l '$DATA/log' -o \"-p $PORT -k $DATA -c listen_addresses=127.0.0.1\" -w start >/dev/null"
echo "export OPMAP_TEST_PG_URL=postgresql+psycopg://opmap@127.0.0.1:$PORT/postgres"
echo "export OPMAP_PG_DATA=$DATA"
