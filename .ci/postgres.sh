#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (the two-worker sweep test): start it, print its URL.
#
#   .ci/postgres.sh [start] [DIR]   initdb DIR (once), start it (if not running), print postgresql://... on stdout
#   .ci/postgres.sh stop [DIR]      stop it (the files stay; `rm -rf DIR` removes them)
#
# DIR defaults to $TEXTLORA_PG_DIR or /tmp/textlora-pg. Idempotent: a running cluster in DIR is reused and its URL
# printed again. Listens on 127.0.0.1 only (a free port, remembered in DIR/port) and on a socket in DIR, with trust
# authentication for the user textlora and a database textlora. PostgreSQL refuses to run as root, so as root the
# cluster belongs to the `postgres` user (created if missing). Without initdb/pg_ctl it installs Debian's
# `postgresql` package with apt-get (set TEXTLORA_PG_NO_INSTALL=1 to fail instead). Progress goes to stderr.
set -euo pipefail

cmd=start
case "${1:-}" in start|stop) cmd=$1; shift ;; esac
DIR=${1:-${TEXTLORA_PG_DIR:-/tmp/textlora-pg}}
say() { echo "postgres.sh: $*" >&2; }

find_bin() {  # the folder holding initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin
  local p
  p=$(command -v pg_ctl 2>/dev/null || true)
  if [ -n "$p" ] && [ -x "$(dirname "$(readlink -f "$p")")/initdb" ]; then dirname "$(readlink -f "$p")"; return; fi
  p=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$p" ] && [ -x "$p/initdb" ] && [ -x "$p/pg_ctl" ]; then echo "$p"; fi
}

BIN=$(find_bin)
if [ -z "$BIN" ]; then
  if [ "$cmd" = stop ]; then exit 0; fi
  if [ -n "${TEXTLORA_PG_NO_INSTALL:-}" ]; then say "initdb/pg_ctl not found (TEXTLORA_PG_NO_INSTALL is set)"; exit 3; fi
  say "installing Debian's postgresql package"
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
  BIN=$(find_bin)
  [ -n "$BIN" ] || { say "postgresql installed, but initdb/pg_ctl still not found"; exit 3; }
fi

as_owner() {  # run a PostgreSQL program as the cluster's owner: `postgres` when we are root
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$DIR"
if [ "$(id -u)" -eq 0 ]; then
  id -u postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" --shell /usr/sbin/nologin postgres
  chown postgres "$DIR"
fi
chmod 700 "$DIR"
DATA=$DIR/data

if [ "$cmd" = stop ]; then
  if [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
  fi
  exit 0
fi

exec 9>"$DIR/.lock"  # one start at a time per DIR (the server must not inherit it: `9>&-` below)
flock 9

if [ ! -f "$DATA/PG_VERSION" ]; then
  say "initdb $DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U textlora --auth=trust -E UTF8 --no-locale >/dev/null
fi

if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "$port" > "$DIR/port"
  say "starting on 127.0.0.1:$port"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR -c max_connections=100" start \
    >&2 9>&- \
    || { tail -n 20 "$DIR/server.log" >&2; exit 1; }
fi
port=$(cat "$DIR/port")

"$BIN/psql" -h 127.0.0.1 -p "$port" -U textlora -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'textlora'" \
  | grep -q 1 || "$BIN/createdb" -h 127.0.0.1 -p "$port" -U textlora textlora
echo "postgresql://textlora@127.0.0.1:$port/textlora"
