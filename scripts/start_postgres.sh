#!/usr/bin/env bash
# Start a throw-away PostgreSQL for the test suite, idempotently, and print its SQLAlchemy URL.
#
#   eval "$(scripts/start_postgres.sh --export)"   # sets ADAPTERHUB_TEST_POSTGRES_URL
#   scripts/start_postgres.sh                       # prints the URL (last line of stdout)
#   scripts/start_postgres.sh --stop                # stops it
#
# initdb runs if the data folder is missing; the server starts if it is not running; the script
# waits until it accepts connections. Trust authentication on 127.0.0.1 only: for tests, never for
# real data. PostgreSQL refuses to run as root, so under root a system user (PG_USER, default
# pgtest) is created and used. Settings (environment): PG_BIN (folder with initdb/pg_ctl; default:
# newest /usr/lib/postgresql/*/bin, else PATH), PGDATA_DIR (default /tmp/adapterhub-pgdata),
# PG_PORT (default 55432), PG_USER.
set -euo pipefail

PGDATA_DIR="${PGDATA_DIR:-/tmp/adapterhub-pgdata}"
PG_PORT="${PG_PORT:-55432}"
if [[ -z "${PG_BIN:-}" ]]; then
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$PG_BIN" ]] || PG_BIN="$(dirname "$(command -v pg_ctl || echo /nonexistent/pg_ctl)")"
fi
[[ -x "$PG_BIN/pg_ctl" ]] || { echo "pg_ctl not found; install PostgreSQL (apt-get install postgresql) or set PG_BIN" >&2; exit 1; }

if [[ "$(id -u)" == 0 ]]; then
  PG_USER="${PG_USER:-pgtest}"
  id "$PG_USER" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$PG_USER"
  as_pg() { runuser -u "$PG_USER" -- "$@"; }
else
  PG_USER="${PG_USER:-$(id -un)}"
  as_pg() { "$@"; }
fi
LOG="${PGDATA_DIR}.log"

if [[ "${1:-}" == "--stop" ]]; then
  if [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast stop >&2; fi
  exit 0
fi

if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
  mkdir -p "$PGDATA_DIR"
  chown "$PG_USER" "$PGDATA_DIR" 2>/dev/null || true
  chmod 700 "$PGDATA_DIR"
  as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U "$PG_USER" -A trust -E UTF8 --locale=C.UTF-8 >&2 \
    || as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U "$PG_USER" -A trust -E UTF8 --locale=C >&2
fi
touch "$LOG"; chown "$PG_USER" "$LOG" 2>/dev/null || true

if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$LOG" -w -t 60 \
    -o "-k /tmp -p $PG_PORT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >&2
fi

for _ in $(seq 1 120); do
  if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then break; fi
  sleep 0.5
done
"$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >&2 || { echo "PostgreSQL did not become ready; see $LOG" >&2; exit 1; }

URL="postgresql+psycopg://${PG_USER}@127.0.0.1:${PG_PORT}/postgres"
if [[ "${1:-}" == "--export" ]]; then
  echo "export ADAPTERHUB_TEST_POSTGRES_URL=$URL"
else
  echo "$URL"
fi
