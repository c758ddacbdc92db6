# Shared set-up for scripts/run and scripts/test: install what is missing,
# from the registries only (Debian, crates.io, npm), with pinned versions.
# Sourced, not executed.

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
# apt_install PKG...: installs Debian packages when running as root, else
# stops with the exact command to run.
apt_install() {
  if ! is_root; then
    die "missing: $*. Install with: sudo apt-get install -y $*"
  fi
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_rust() {
  command -v cargo >/dev/null || die "Rust is required: install it from https://rustup.rs"
}

ensure_redis_server() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server
  fi
  local version
  version=$(redis-server --version | sed -n 's/.*v=\([0-9]*\)\..*/\1/p')
  [ "${version:-0}" -ge 7 ] || die "Redis 7 or newer is required (found $(redis-server --version))"
}

# PostgreSQL for the test suite: the server must listen on 127.0.0.1:5432
# and let the `postgres` user create databases (SECKILL_TEST_PG_URL
# overrides the URL).
ensure_postgres() {
  local url="${SECKILL_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
  if ! command -v psql >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql postgresql-client
  fi
  if ! psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
    if is_root && command -v pg_ctlcluster >/dev/null; then
      local version
      version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
      if [ -n "$version" ]; then
        log "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
        sleep 2
      fi
      # A fresh install has no `test` database; create it if we can.
      su postgres -c "psql -Atqc \"select 1 from pg_database where datname='test'\"" 2>/dev/null | grep -q 1 \
        || su postgres -c "createdb test" 2>/dev/null || true
    fi
  fi
  psql "$url" -Atqc 'select 1' >/dev/null 2>&1 || die "PostgreSQL is not reachable at $url.
  The tests need a server on 127.0.0.1:5432 where user postgres may create databases without a password
  (as on the CI machine: trust authentication for local TCP), or set SECKILL_TEST_PG_URL."
}

# libfaketime, for the test that runs an origin with a wrong clock.
ensure_faketime() {
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || apt_install faketime
}

# Headless Chromium and ChromeDriver for the browser tests (Debian's
# packages; a test tool's own browser download cannot work offline).
ensure_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
}

# Schemathesis, for the contract tests (tests/tests/contract.rs), from PyPI.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  if schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-pip
  log "pip install schemathesis==$SCHEMATHESIS_VERSION"
  python3 -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION" \
    || python3 -m pip install -q --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "cannot install schemathesis: run pip install schemathesis==$SCHEMATHESIS_VERSION"
  schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION" \
    || die "schemathesis $SCHEMATHESIS_VERSION is installed but not on PATH: add pip's script directory to PATH"
}

# promtool (Debian's prometheus package), for the alert rules in docs/ops/,
# and prometheus itself for the scrape test.
ensure_prometheus() {
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    apt_install prometheus
  fi
}
