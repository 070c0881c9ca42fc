#!/usr/bin/env bash
# Instructions per transaction, pgshift vs the raw relay, counted by callgrind:
# deterministic where TPS on a shared 2-core box is not. Each proxy runs under
# valgrind; pgbench runs a warm-up of N1 select-only transactions, callgrind dumps
# (which zeroes its counters), then N2 transactions, and the second dump divided
# by N2 is the cost per transaction (one connection set-up included, amortised).
#
#   bench/instructions.sh            # -M simple and extended, one client
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${BENCH_PGPORT:-25532}
PROXY_PORT=$((PG_PORT + 1))
N1=${N1:-500}
N2=${N2:-2500}
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet)
cargo build --release --quiet --manifest-path "$HERE/relay/Cargo.toml"
TMP=$(mktemp -d /tmp/pgshift-instr.XXXXXX)
chown postgres "$TMP"
PG_PID=""; PROXY_PID=""
cleanup() {
  [[ -n $PROXY_PID ]] && kill "$PROXY_PID" 2>/dev/null || true
  [[ -n $PG_PID ]] && kill -INT "$PG_PID" 2>/dev/null && wait "$PG_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$TMP" "$@"; }
as_pg "$PGBIN/initdb" -D "$TMP/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$PGBIN/postgres" -D "$TMP/data" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
  -c unix_socket_directories="$TMP" -c fsync=off >"$TMP/pg.log" 2>&1 &
PG_PID=$!
until psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -XqAt -c 'select 1' >/dev/null 2>&1; do sleep 0.2; done
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s 1 -q postgres >/dev/null 2>&1

# Total instructions callgrind counted so far in the proxy.
instructions() {
  callgrind_control -d "$1" >/dev/null 2>&1
  sleep 0.5
  local last
  last=$(ls -t "$TMP"/cg.out.* | head -1)
  awk '/^summary:/ {print $2}' "$last"
}

measure() {  # NAME PROTOCOL CMD...
  local name=$1 proto=$2; shift 2
  rm -f "$TMP"/cg.out*
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out.%p" "$@" >"$TMP/$name.log" 2>&1 &
  PROXY_PID=$!
  until psql -h 127.0.0.1 -p "$PROXY_PORT" -U postgres -XqAt -c 'select 1' >/dev/null 2>&1; do sleep 0.5; done
  local bench=("$PGBIN/pgbench" -h 127.0.0.1 -p "$PROXY_PORT" -U postgres -S -n -c 1 -M "$proto")
  "${bench[@]}" -t "$N1" postgres >/dev/null
  instructions "$PROXY_PID" >/dev/null
  "${bench[@]}" -t "$N2" postgres >/dev/null
  local b; b=$(instructions "$PROXY_PID")
  kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
  echo $(( b / N2 ))
}

printf '| protocol | pgshift instr/txn | relay instr/txn | pgshift/relay |\n|---|---|---|---|\n'
for proto in simple extended; do
  p=$(measure pgshift "$proto" "$ROOT/target/release/pgshift" serve --listen "127.0.0.1:$PROXY_PORT" \
      --upstream "127.0.0.1:$PG_PORT" -c log.level=warn)
  r=$(measure relay "$proto" "$HERE/relay/target/release/relay" --listen "127.0.0.1:$PROXY_PORT" \
      --upstream "127.0.0.1:$PG_PORT")
  printf '| %s | %s | %s | %s |\n' "$proto" "$p" "$r" "$(awk -v a="$p" -v b="$r" 'BEGIN {printf "%.2f", a/b}')"
done
