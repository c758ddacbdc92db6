# What scripts/bench and scripts/profile share: a scratch folder whose
# processes are stopped on exit, the release binaries, the secrets the
# generator mints tokens with, a Redis run as scripts/run runs it, and
# origins on free ports. Sourced after scripts/lib/setup.sh; the caller
# may set $pg_admin and $pg_db to have that database dropped on exit.

work=$(mktemp -d /tmp/seckill-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  # wrangler does not always stop on SIGTERM.
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${pg_db:-}" ] && psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# build_release: the origin and the generator, optimised.
build_release() {
  log "building (release)"
  cargo build --release --locked -p seckill-origin -p seckill-bench
  origin_bin="${CARGO_TARGET_DIR:-$root/target}/release/seckill-origin"
  bench="${CARGO_TARGET_DIR:-$root/target}/release/seckill-bench"
  export SECKILL_TOKEN_SECRET="bench-token-secret-0123456789"
  export SECKILL_ADMIN_TOKEN="bench-admin-token-0123456789"
  export RUST_LOG=warn
}

# A free port on 127.0.0.1 (after build_release).
free_port() { "$bench" free-port; }

# redis_node PORT DIR [ARG...]: a redis-server as scripts/run runs it
# (append-only file, fsync every second) on PORT, its files in DIR, with
# ARGs added; sets $last_pid once it answers.
redis_node() {
  local port=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" \
    --appendonly yes --appendfsync everysec --logfile "$dir/redis.log" "$@" &
  pids+=($!)
  last_pid=$!
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
  die "redis-server did not start: $(cat "$dir/redis.log")"
}

# start_redis: Redis as scripts/run runs it on a free port; sets
# $redis_port, $redis_pid and REDIS_URL.
start_redis() {
  redis_port=$(free_port)
  redis_node "$redis_port" "$work"
  redis_pid=$last_pid
  export REDIS_URL="redis://127.0.0.1:$redis_port"
}

# start_redis_cluster [PRIMARIES]: a Redis Cluster of PRIMARIES (3 unless
# told; 1 or 3 or more) with a replica each, started as the tests start
# theirs (tests/src/redis_cluster.rs: redis-server --cluster-enabled yes,
# joined by redis-cli --cluster create --cluster-replicas 1) but persisted
# like start_redis, on free ports whose cluster bus ports are free too.
# redis-cli will not create fewer than three primaries, so one primary is
# given every slot and met by its replica by hand. Waits until every node
# says cluster_state:ok and every replica is in sync; sets $cluster_nodes
# (host:port,… for REDIS_CLUSTER_NODES), $cluster_ports and $cluster_pids.
start_redis_cluster() {
  local primaries=${1:-3}
  cluster_ports=() cluster_pids=()
  local port
  for _ in $(seq $(( primaries * 2 ))); do
    # Each node is listening before the next port is picked, so no two
    # nodes (or bus ports) collide.
    port=$("$bench" free-port --cluster-bus)
    # A node timeout well above the pauses of a saturated 2-core machine:
    # nothing here should fail over.
    redis_node "$port" "$work/cluster/$port" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 5000
    cluster_ports+=("$port") cluster_pids+=("$last_pid")
  done
  local addresses=()
  for port in "${cluster_ports[@]}"; do addresses+=("127.0.0.1:$port"); done
  if [ "$primaries" = 1 ]; then
    local primary=${cluster_ports[0]} replica=${cluster_ports[1]}
    redis-cli -p "$primary" cluster addslotsrange 0 16383 >/dev/null
    redis-cli -p "$replica" cluster meet 127.0.0.1 "$primary" >/dev/null
    local primary_id
    primary_id=$(redis-cli -p "$primary" cluster myid)
    # The replica can only follow a node it already knows (redis-cli exits
    # 0 on an error reply: its answer is what tells), and clients read the
    # replica from the primary's view.
    local answer=
    for _ in $(seq 100); do
      answer=$(redis-cli -p "$replica" cluster replicate "$primary_id" 2>&1)
      [ "$answer" = OK ] && break
      sleep 0.1
    done
    [ "$answer" = OK ] || die "the replica cannot follow the primary: $answer"
    for _ in $(seq 100); do
      [ -n "$(redis-cli -p "$primary" cluster replicas "$primary_id")" ] && break
      sleep 0.1
    done
  else
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes < /dev/null \
      > "$work/cluster/create.log" 2>&1 || die "redis-cli --cluster create failed: $(cat "$work/cluster/create.log")"
  fi
  cluster_nodes=$(IFS=,; echo "${addresses[*]}")
  local healthy state replication
  for _ in $(seq 300); do
    healthy=1
    for port in "${cluster_ports[@]}"; do
      state=$(redis-cli -p "$port" cluster info) replication=$(redis-cli -p "$port" info replication)
      [[ $state == *cluster_state:ok* ]] || healthy=0
      if [[ $replication == *role:slave* ]]; then
        [[ $replication == *master_link_status:up* && $replication == *master_sync_in_progress:0* ]] || healthy=0
      fi
    done
    [ "$healthy" = 1 ] && return
    sleep 0.1
  done
  die "the Redis Cluster did not become healthy: $(redis-cli -p "${cluster_ports[0]}" cluster nodes)"
}

# start_origin NAME DATABASE_URL [VAR=VALUE...]: starts an origin (or a
# worker when SECKILL_RUN=worker) and sets $url to its address and
# $last_pid to its process.
start_origin() {
  local name=$1 database=$2
  shift 2
  local port
  port=$(free_port)
  env DATABASE_URL="$database" SECKILL_BIND="127.0.0.1:$port" SECKILL_KEY_PREFIX="$name:" "$@" \
    "$origin_bin" ${SECKILL_RUN:-serve} > "$work/$name.out" 2> "$work/$name.log" &
  pids+=($!)
  last_pid=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 100); do grep -q "listening on\|worker ready" "$work/$name.out" 2>/dev/null && return; sleep 0.1; done
  die "$name did not start: $(cat "$work/$name.log")"
}

# start_floor: seckill-bench's HTTP floor server (answers 409 at once, does
# nothing else) on a free port; sets $floor_url and $floor_pid.
start_floor() {
  local port
  port=$(free_port)
  "$bench" floor --bind "127.0.0.1:$port" > "$work/floor.out" &
  pids+=($!)
  floor_pid=$!
  floor_url="http://127.0.0.1:$port"
  for _ in $(seq 50); do grep -q "listening on" "$work/floor.out" 2>/dev/null && return; sleep 0.1; done
  die "the HTTP floor did not start"
}

# cpu_ticks PID...: the CPU time (clock ticks, user + system) these
# processes have used so far.
cpu_ticks() { for pid in "$@"; do cat "/proc/$pid/stat"; done | awk '{s += $14 + $15} END {print s}'; }

stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
