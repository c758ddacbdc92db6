# The edge's toolchain, from the registries only, with pinned versions, and
# its build. Sourced by scripts/run, scripts/test and scripts/build-edge.
#
# worker-build would download wasm-bindgen and wasm-opt from GitHub and
# esbuild from npm at build time; every one is provided here instead and
# pointed at with <TOOL>_BIN, so a build fetches nothing.

WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=0.2.130   # must equal the wasm-bindgen in Cargo.lock

# cargo_install_pinned CRATE VERSION BINARY [--locked]: installs unless that
# version is already installed.
cargo_install_pinned() {
  local crate=$1 version=$2 binary=$3 locked=${4:-}
  if command -v "$binary" >/dev/null && "$binary" --version 2>/dev/null | grep -q "$version"; then
    return
  fi
  log "cargo install $crate $version (a few minutes, once)"
  cargo install $locked --version "$version" "$crate"
}

ensure_edge_toolchain() {
  local root=$1
  command -v node >/dev/null && command -v npm >/dev/null \
    || die "Node.js 20+ and npm are required for the edge: apt-get install nodejs npm"
  rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$' \
    || { log "rustup target add wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown; }
  cargo_install_pinned worker-build "$WORKER_BUILD_VERSION" worker-build --locked
  # Without --locked: the CLI's own lock file names a crate version the
  # registry no longer serves.
  cargo_install_pinned wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen
  local lock_version
  lock_version=$(grep -A1 '^name = "wasm-bindgen"$' "$root/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')
  [ "$lock_version" = "$WASM_BINDGEN_VERSION" ] \
    || die "Cargo.lock has wasm-bindgen $lock_version but the pinned CLI is $WASM_BINDGEN_VERSION"
  # npm ci again whenever the lock file changed since the last install.
  local stamp="$root/node_modules/.seckill-lock.sha256" want
  want=$(sha256sum "$root/package-lock.json" | cut -d' ' -f1)
  if [ ! -x "$root/node_modules/.bin/wrangler" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "npm ci (wrangler, workerd, binaryen)"
    (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
}

# The environment wrangler runs in: no telemetry, no update check, nothing
# fetched from Cloudflare.
wrangler_env() {
  export WRANGLER_SEND_METRICS=false WRANGLER_SEND_ERROR_REPORTS=false WRANGLER_HIDE_BANNER=true CLOUDFLARE_CF_FETCH_ENABLED=false
}

# build_edge ROOT: edge/build/index.js (+ the Wasm module), release build.
build_edge() {
  local root=$1
  export WASM_BINDGEN_BIN=wasm-bindgen
  export WASM_OPT_BIN="$root/node_modules/.bin/wasm-opt"
  export ESBUILD_BIN="$root/node_modules/@esbuild/linux-x64/bin/esbuild"
  log "building the edge (worker-build --release)"
  (cd "$root/edge" && worker-build --release)
}
