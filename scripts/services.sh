# Sourced by scripts/test and scripts/soak: throwaway Postgres and Redis.
#
# Each run starts its own Postgres and Redis on free loopback ports in a temp
# dir and stops them on exit. It never uses (or needs) a server someone
# started by hand, and a fresh Debian Postgres's password prompt on 127.0.0.1
# does not apply to a cluster made with `initdb -A trust`.
#
# Use: `. scripts/services.sh; services_start` (needs a `log` function). It
# exports PORTCULLIS_TEST_PG_URL and PORTCULLIS_TEST_REDIS_URL (a value
# already set in the environment is used as is) and sets an EXIT trap.

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "missing $* and no apt-get to install it" >&2; exit 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

SERVICES_DIR=""
PG_BIN=""
services_stop() {
  if [ -n "$SERVICES_DIR" ]; then
    if [ -n "$PG_BIN" ] && [ -f "$SERVICES_DIR/pg/data/postmaster.pid" ]; then
      as_postgres "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    if [ -f "$SERVICES_DIR/redis.pid" ]; then
      kill "$(cat "$SERVICES_DIR/redis.pid")" 2>/dev/null || true
    fi
    rm -rf "$SERVICES_DIR"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# initdb and postgres refuse to run as root: run them as `postgres` then.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ensure_postgres() {
  # Tests that kill Postgres start their own from these binaries
  # (tests/testkit/src/pg.rs); this run's cluster serves the rest.
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  if [ -n "${PORTCULLIS_TEST_PG_URL:-}" ]; then
    log "using PORTCULLIS_TEST_PG_URL from the environment"
    return
  fi
  local dir="$SERVICES_DIR/pg" port
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  port=$(free_port)
  log "starting a throwaway PostgreSQL on 127.0.0.1:$port"
  as_postgres env LC_ALL=C "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C -N >/dev/null
  as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null || { cat "$dir/postgres.log" >&2; echo "PostgreSQL did not start" >&2; exit 1; }
  export PORTCULLIS_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ensure_redis() {
  # Tests that kill Redis (tests/revocation.rs, tests/jwt_pat.rs) start their
  # own redis-server from this binary on a free port.
  if ! command -v redis-server >/dev/null; then
    log "installing Redis"
    apt_install redis-server
  fi
  if [ -n "${PORTCULLIS_TEST_REDIS_URL:-}" ]; then
    log "using PORTCULLIS_TEST_REDIS_URL from the environment"
    return
  fi
  local port
  port=$(free_port)
  log "starting a throwaway Redis on 127.0.0.1:$port"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$SERVICES_DIR" --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log"
  for _ in $(seq 100); do
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 \
    || { cat "$SERVICES_DIR/redis.log" >&2; echo "Redis did not start" >&2; exit 1; }
  export PORTCULLIS_TEST_REDIS_URL="redis://127.0.0.1:$port"
}

services_start() {
  SERVICES_DIR=$(mktemp -d /tmp/portcullis-services.XXXXXX)
  chmod 755 "$SERVICES_DIR"
  trap services_stop EXIT
  trap 'exit 130' INT TERM
  ensure_postgres
  ensure_redis
}
