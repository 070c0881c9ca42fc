#!/usr/bin/env bash
# pgshift benchmark kit: pgbench through pgshift vs direct, PgBouncer and a raw relay.
#
# Starts a throwaway PostgreSQL 15 cluster, the proxies under test, runs pgbench
# cells interleaved (every target back-to-back within a cell, so ratios come
# from the same round), measures RSS with idle clients, prints Markdown tables,
# and tears everything down on exit. See bench/README.md for the knobs.
#
#   bench/run.sh                                   # full run
#   BENCH_QUICK=1 BENCH_SECONDS=5 bench/run.sh     # smoke run
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ---------------------------------------------------------------- knobs
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${BENCH_PGPORT:-25432}
PORT_BASE=${BENCH_PORT_BASE:-25440}     # proxies listen on PORT_BASE+1 .. +7
RUN_SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-1}
SCALE=${BENCH_SCALE:-10}
IDLE=${BENCH_IDLE_CLIENTS:-1000}        # 0 = skip the memory test
BUILD=${BENCH_BUILD:-1}                 # 0 = use existing binaries
FOREIGN_MAX=${BENCH_FOREIGN_MAX:-0.12}  # flag runs where other processes used > this many cores
PGSHIFT_BIN=${BENCH_PGSHIFT_BIN:-$ROOT/target/release/pgshift}
read -ra PGSHIFT_EXTRA <<<"${BENCH_PGSHIFT_ARGS:-}"  # extra `pgshift serve` args, e.g. "-c key=value"
RELAY_BIN=$HERE/relay/target/release/relay
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  d_work="select"; d_proto="simple extended"; d_clients="8"; d_reconn=0
else
  d_work="select tpcb"; d_proto="simple extended prepared"; d_clients="1 8 32"; d_reconn=1
fi
WORKLOADS=${BENCH_WORKLOADS:-$d_work}   # select = pgbench -S, tpcb = built-in TPC-B-like
PROTOCOLS=${BENCH_PROTOCOLS:-$d_proto}
CLIENTS=${BENCH_CLIENTS:-$d_clients}
RECONNECT=${BENCH_RECONNECT:-$d_reconn} # 1 = add -C cells (-S, simple/extended, -c 8)
ALL_TARGETS="direct pgshift-tcp pgshift-uds pgshift-noddl pgbouncer-tcp pgbouncer-uds relay-tcp relay-uds"
TARGETS=${BENCH_TARGETS:-$ALL_TARGETS}
for v in WORKLOADS PROTOCOLS CLIENTS; do  # e.g. BENCH_CLIENTS=none: only the -C cells
  if [[ ${!v} == none ]]; then printf -v "$v" "%s" ""; fi
done

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${BENCH_OUT:-$HERE/out}/$STAMP
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv

# Plaintext everywhere: no SSLRequest round trip, no TLS on any hop.
export PGSSLMODE=disable PGGSSENCMODE=disable PGUSER=postgres PGDATABASE=postgres PGCONNECT_TIMEOUT=10
unset PGHOST PGPORT PGHOSTADDR PGSERVICE PGPASSWORD 2>/dev/null || true

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
TMP=""
PGPID=""
PIDS=()
cleanup() {
  set +e
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=0; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break; sleep 0.3
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  if [[ -n $PGPID ]]; then
    # The postmaster is our child: SIGINT = fast shutdown, SIGQUIT = immediate.
    for sig in INT QUIT KILL; do
      kill -"$sig" "$PGPID" 2>/dev/null || break
      for _ in $(seq 1 60); do kill -0 "$PGPID" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$PGPID" 2>/dev/null || break
    done
    wait "$PGPID" 2>/dev/null
  fi
  if [[ -n $TMP && -f $TMP/data/postmaster.pid ]]; then  # should not happen; last resort
    pm=$(head -1 "$TMP/data/postmaster.pid")
    [[ -n $pm ]] && kill -KILL "$pm" 2>/dev/null && sleep 1
  fi
  [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
  log "cleaned up (logs in $OUT)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run as the postgres OS user (initdb/postgres/pgbouncer refuse root), cwd = TMP.
as_pg() { (cd "${TMP:-/}" && exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME="${TMP:-/}" "$@"); }

port_free() { [[ -z $(ss -Hltn "sport = :$1") ]]; }

# ---------------------------------------------------------------- prerequisites
[[ $(id -u) == 0 ]] || die "run as root (needs setpriv to the postgres user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user"
[[ -x $PGBIN/initdb && -x $PGBIN/pgbench && -x $PGBIN/psql ]] || die "PostgreSQL 15 binaries not found in $PGBIN"
if ! command -v pgbouncer >/dev/null; then
  log "installing pgbouncer"
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null
fi
PGBOUNCER=$(command -v pgbouncer)
PGBENCH=$PGBIN/pgbench
PSQL=$PGBIN/psql
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PGSHIFT_OK=1; PGSHIFT_WHY=""
if [[ $BUILD == 1 ]]; then
  log "building relay"
  cargo build --release --manifest-path "$HERE/relay/Cargo.toml" >"$OUT/build-relay.log" 2>&1 ||
    die "relay build failed, see $OUT/build-relay.log"
  log "building pgshift (cargo build --release)"
  if ! (cd "$ROOT" && cargo build --release) >"$OUT/build-pgshift.log" 2>&1; then
    PGSHIFT_OK=0; PGSHIFT_WHY="build failed (see $OUT/build-pgshift.log)"
  fi
fi
[[ -x $RELAY_BIN ]] || die "relay binary missing: $RELAY_BIN"
if [[ $PGSHIFT_OK == 1 && ! -x $PGSHIFT_BIN ]]; then PGSHIFT_OK=0; PGSHIFT_WHY="binary missing: $PGSHIFT_BIN"; fi

declare -A PORT=( [direct]=$PG_PORT [pgshift-tcp]=$((PORT_BASE+1)) [pgshift-uds]=$((PORT_BASE+2))
  [pgbouncer-tcp]=$((PORT_BASE+3)) [pgbouncer-uds]=$((PORT_BASE+4)) [relay-tcp]=$((PORT_BASE+5)) [relay-uds]=$((PORT_BASE+6)) [pgshift-noddl]=$((PORT_BASE+7)) )
declare -A PID=() AVAIL=() WHY=()
for t in $ALL_TARGETS; do port_free "${PORT[$t]}" || die "port ${PORT[$t]} ($t) is already in use"; done

# ---------------------------------------------------------------- cluster
TMP=$(mktemp -d /tmp/pgshift-bench.XXXXXX)
chmod 755 "$TMP"; chown postgres:postgres "$TMP"
SOCKDIR=$TMP
log "initdb in $TMP/data"
as_pg "$PGBIN/initdb" -D "$TMP/data" -A trust -U postgres >"$OUT/initdb.log" 2>&1 || die "initdb failed, see $OUT/initdb.log"
cat >>"$TMP/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$SOCKDIR'
max_connections = 1200
shared_buffers = 512MB
fsync = off
synchronous_commit = off
EOF
# Start the postmaster as our own child (not via pg_ctl) so that cleanup can
# wait for it and CPU accounting sees every backend as a descendant of this shell.
setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$TMP" \
  "$PGBIN/postgres" -D "$TMP/data" >"$OUT/postgres.log" 2>&1 &
PGPID=$!
for ((i = 0; i < 120; i++)); do
  kill -0 "$PGPID" 2>/dev/null || die "postgres exited, see $OUT/postgres.log"
  "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.5
done
"$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || die "postgres not ready after 60 s, see $OUT/postgres.log"
PID[direct]=$PGPID
log "postgres up on 127.0.0.1:$PG_PORT and $SOCKDIR (pid ${PID[direct]}); pgbench -i -s $SCALE"
"$PGBENCH" -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" postgres >"$OUT/pgbench-init.log" 2>&1 ||
  die "pgbench -i failed, see $OUT/pgbench-init.log"
AVAIL[direct]=1

# ---------------------------------------------------------------- targets
sql_ok() { [[ $("$PSQL" -h 127.0.0.1 -p "$1" -X -qAt -c 'select 1' 2>/dev/null) == 1 ]]; }

# wait_ready TARGET: up to 15 s for the process to answer `select 1`.
wait_ready() {
  local t=$1 i
  for ((i = 0; i < 75; i++)); do
    if ! kill -0 "${PID[$t]}" 2>/dev/null; then WHY[$t]="process exited (see $OUT/$t.log)"; return 1; fi
    sql_ok "${PORT[$t]}" && return 0
    sleep 0.2
  done
  WHY[$t]="no answer to 'select 1' on port ${PORT[$t]} within 15 s (see $OUT/$t.log)"; return 1
}

start_target() {
  local t=$1; shift
  "$@" >"$OUT/$t.log" 2>&1 &
  PID[$t]=$!; PIDS+=("$!")
  if wait_ready "$t"; then AVAIL[$t]=1; log "$t ready on :${PORT[$t]} (pid ${PID[$t]})"
  else AVAIL[$t]=0; kill -TERM "${PID[$t]}" 2>/dev/null || true; log "$t: not available: ${WHY[$t]}"; fi
}

pgbouncer_conf() {  # NAME HOST LISTENPORT
  cat >"$TMP/$1.ini" <<EOF
[databases]
* = host=$2 port=$PG_PORT
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $3
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = session
max_client_conn = 2000
default_pool_size = 100
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile =
pidfile =
EOF
  chown postgres:postgres "$TMP/$1.ini"
}
echo '"postgres" ""' >"$TMP/userlist.txt"; chown postgres:postgres "$TMP/userlist.txt"
pgbouncer_conf pgbouncer-tcp 127.0.0.1 "${PORT[pgbouncer-tcp]}"
pgbouncer_conf pgbouncer-uds "$SOCKDIR" "${PORT[pgbouncer-uds]}"

want() { [[ " $TARGETS " == *" $1 "* ]]; }
for t in pgshift-tcp pgshift-uds pgshift-noddl; do
  want "$t" || continue
  if [[ $PGSHIFT_OK == 0 ]]; then AVAIL[$t]=0; WHY[$t]=$PGSHIFT_WHY; log "$t: not available: $PGSHIFT_WHY"; continue; fi
  up=127.0.0.1:$PG_PORT; [[ $t == pgshift-uds ]] && up=$SOCKDIR:$PG_PORT
  # pgshift-noddl: the DDL engine and rollouts off (no sniff-triggered holds, no
  # record of Describes), to price them.
  off=(); [[ $t == pgshift-noddl ]] && off=(-c ddl.enabled=false -c rollout.enabled=false)
  start_target "$t" "$PGSHIFT_BIN" serve --listen "127.0.0.1:${PORT[$t]}" --upstream "$up" --metrics-listen "" --admin-listen "" "${off[@]}" "${PGSHIFT_EXTRA[@]}"
done
for t in pgbouncer-tcp pgbouncer-uds; do
  # setpriv and env exec, so $! is pgbouncer itself.
  if want "$t"; then
    start_target "$t" setpriv --reuid=postgres --regid=postgres --init-groups env HOME="$TMP" "$PGBOUNCER" "$TMP/$t.ini"
  fi
done
if want relay-tcp; then start_target relay-tcp "$RELAY_BIN" --listen "127.0.0.1:${PORT[relay-tcp]}" --upstream "127.0.0.1:$PG_PORT"; fi
if want relay-uds; then start_target relay-uds "$RELAY_BIN" --listen "127.0.0.1:${PORT[relay-uds]}" --upstream "$SOCKDIR:$PG_PORT"; fi

# ---------------------------------------------------------------- CPU accounting
# bench/cpuacct.py snapshots per-process CPU before/after each run and reports
# the proxy's CPU per transaction and how much CPU processes outside this
# benchmark ("foreign") used meanwhile. See the docstring there.
SNAP0=$OUT/.snap0.json SNAP1=$OUT/.snap1.json
snap() { python3 "$HERE/cpuacct.py" snap "$1"; }

# ---------------------------------------------------------------- memory test
vmrss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
client_backends() { "$PSQL" -h 127.0.0.1 -p "$PG_PORT" -X -qAt -c "select count(*) from pg_stat_activity where backend_type = 'client backend'" 2>/dev/null || echo 0; }
declare -A RSS0=() RSS1=() RSS2=() IDLE_NOTE=()
idle_test() {
  local t=$1 ipid i st
  RSS0[$t]=$(vmrss "${PID[$t]}")
  python3 "$HERE/idle_clients.py" --port "${PORT[$t]}" --count "$IDLE" --hold 900 >"$OUT/idle-$t.log" 2>&1 &
  ipid=$!; PIDS+=("$ipid")
  for ((i = 0; i < 1200; i++)); do
    grep -qE '^(ready|failed)' "$OUT/idle-$t.log" && break
    kill -0 "$ipid" 2>/dev/null || break
    sleep 0.25
  done
  sleep 1
  RSS1[$t]=$(vmrss "${PID[$t]}")
  st=$(head -1 "$OUT/idle-$t.log"); IDLE_NOTE[$t]=${st:-no output}
  kill -TERM "$ipid" 2>/dev/null || true; wait "$ipid" 2>/dev/null || true
  for ((i = 0; i < 120; i++)); do (( $(client_backends) <= 40 )) && break; sleep 0.5; done
  sleep 1
  RSS2[$t]=$(vmrss "${PID[$t]}")
  log "idle $t: ${IDLE_NOTE[$t]}; VmRSS ${RSS0[$t]} -> ${RSS1[$t]} -> ${RSS2[$t]} kB"
}
if (( IDLE > 0 )); then
  for t in pgshift-tcp pgbouncer-tcp relay-tcp; do
    if want "$t" && [[ ${AVAIL[$t]:-0} == 1 ]]; then idle_test "$t"; fi
  done
fi

# ---------------------------------------------------------------- cells
CELLS=()   # "workload proto clients reconnect"
for w in $WORKLOADS; do for m in $PROTOCOLS; do for c in $CLIENTS; do CELLS+=("$w $m $c 0"); done; done; done
if [[ $RECONNECT == 1 && " $WORKLOADS " == *" select "* ]]; then
  for m in simple extended; do
    if [[ " $PROTOCOLS " == *" $m "* ]]; then CELLS+=("select $m 8 1"); fi
  done
fi
cell_label() { local w=$1 m=$2 c=$3 r=$4; printf '%s | %s | %s%s' "$([[ $w == select ]] && echo -S || echo TPC-B)" "$m" "$c" "$([[ $r == 1 ]] && echo ' -C')"; }

read -ra TLIST <<<"$TARGETS"
printf 'round\tworkload\tproto\tclients\treconnect\ttarget\ttps\tlatency_ms\ttxns\tproxy_us_per_txn\thost_busy_pct\tforeign_cores\trc\n' >"$RESULTS"
declare -A TPS=() LAT=() FOREIGN=() PXUS=()

# pgbench vacuums branches/tellers and truncates history before each run. We run
# that same maintenance directly against Postgres and pass -n, so every target
# starts from the same table state and no proxy sees VACUUM/TRUNCATE.
pre_run_maintenance() {
  "$PSQL" -h 127.0.0.1 -p "$PG_PORT" -X -q -c 'vacuum pgbench_branches' -c 'vacuum pgbench_tellers' \
    -c 'truncate pgbench_history' >/dev/null 2>&1 || log "warning: pre-run vacuum failed"
}

run_one() {  # ROUND W M C R TARGET
  local rd=$1 w=$2 m=$3 c=$4 r=$5 t=$6 key="$1|$2|$3|$4|$5|$6"
  if [[ ${AVAIL[$t]:-0} != 1 ]]; then TPS[$key]=na; return; fi
  if ! kill -0 "${PID[$t]}" 2>/dev/null; then AVAIL[$t]=0; WHY[$t]="process died before r$rd $w $m c$c"; TPS[$key]=na; log "$t died"; return; fi
  local j=2; [[ $c == 1 ]] && j=1
  local args=(-n -T "$RUN_SECS" -M "$m" -c "$c" -j "$j" -h 127.0.0.1 -p "${PORT[$t]}")
  [[ $w == select ]] && args+=(-S)
  [[ $r == 1 ]] && args+=(-C)
  local lf="$OUT/r${rd}_${w}_${m}_c${c}$([[ $r == 1 ]] && echo _C)_${t}.log"
  pre_run_maintenance
  local pxpid=0; [[ $t != direct ]] && pxpid=${PID[$t]}
  local rc=0
  snap "$SNAP0"
  echo "# pgbench ${args[*]} postgres" >"$lf"
  timeout --foreground -k 5 $((RUN_SECS + 120)) "$PGBENCH" "${args[@]}" postgres >>"$lf" 2>&1 || rc=$?
  snap "$SNAP1"
  local tps lat txns
  tps=$(sed -nE 's/^tps = ([0-9.]+) .*/\1/p' "$lf" | tail -1)
  lat=$(sed -nE 's/^latency average = ([0-9.]+) ms.*/\1/p' "$lf" | head -1)
  txns=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$lf" | head -1)
  local acct pxus busy foreign kthr
  acct=$(python3 "$HERE/cpuacct.py" diff "$SNAP0" "$SNAP1" --script $$ --proxy "$pxpid" --txns "${txns:-0}")
  read -r pxus busy foreign kthr <<<"${acct%%$'\n'*}"
  printf '# cpu: proxy %s us/txn, host busy %s%%, foreign %s cores, kernel threads %s cores\n%s\n' \
    "$pxus" "$busy" "$foreign" "$kthr" "${acct#*$'\n'}" >>"$lf"
  if [[ $rc != 0 || -z $tps ]]; then
    TPS[$key]=fail; log "r$rd $(cell_label "$w" "$m" "$c" "$r" | tr -d '|') $t: FAILED rc=$rc (see $lf)"
    kill -0 "${PID[$t]}" 2>/dev/null || { AVAIL[$t]=0; WHY[$t]="process died during r$rd $w $m c$c"; }
  else
    TPS[$key]=$tps; LAT[$key]=$lat
    log "r$rd $(cell_label "$w" "$m" "$c" "$r" | tr -s ' |' ' ') $t: ${tps%.*} tps, ${lat} ms, proxy ${pxus} us/txn, host ${busy}%, foreign ${foreign} cores"
  fi
  FOREIGN[$key]=$foreign; PXUS[$key]=$pxus
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rd" "$w" "$m" "$c" "$r" "$t" "${tps:-}" "${lat:-}" "${txns:-}" "$pxus" "$busy" "$foreign" "$rc" >>"$RESULTS"
}

NRUNS=$(( ${#CELLS[@]} * ${#TLIST[@]} * ROUNDS ))
log "${#CELLS[@]} cells x ${#TLIST[@]} targets x $ROUNDS round(s) x ${RUN_SECS}s = ~$(( NRUNS * RUN_SECS / 60 )) min of pgbench"
for ((rd = 1; rd <= ROUNDS; rd++)); do
  # Rotate the target order each round so no target is always first/last in a cell.
  n=${#TLIST[@]}; ORDER=()
  for ((i = 0; i < n; i++)); do ORDER+=("${TLIST[$(( (i + rd - 1) % n ))]}"); done
  for cell in "${CELLS[@]}"; do
    read -r w m c r <<<"$cell"
    for t in "${ORDER[@]}"; do run_one "$rd" "$w" "$m" "$c" "$r" "$t"; done
  done
done

# ---------------------------------------------------------------- report
fmt_cell() {  # KEY
  local v=${TPS[$1]:-na}
  case $v in
    na) echo "n/a" ;;
    fail) echo "FAIL" ;;
    *) local flag=""; awk -v f="${FOREIGN[$1]:-0}" -v m="$FOREIGN_MAX" 'BEGIN{exit !(f > m)}' && flag="†"
       printf '%.0f (%s)%s' "$v" "${LAT[$1]}" "$flag" ;;
  esac
}
ratio() {  # KEYA KEYB
  local a=${TPS[$1]:-na} b=${TPS[$2]:-na}
  [[ $a =~ ^[0-9.]+$ && $b =~ ^[0-9.]+$ ]] || { echo "–"; return; }
  awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }'
}
RATIOS=("pgshift-tcp direct" "pgshift-tcp pgbouncer-tcp" "pgshift-tcp relay-tcp" "pgshift-uds relay-uds"
  "pgshift-uds pgbouncer-uds" "pgshift-tcp pgshift-noddl" "pgbouncer-tcp direct" "relay-tcp direct")
{
  echo
  echo "## pgbench through each target: TPS (avg latency ms)"
  echo
  echo "$(nproc) CPUs, PG 15 scale $SCALE, ${RUN_SECS}s per run, $ROUNDS round(s), $(date -u +%Y-%m-%dT%H:%MZ)."
  for t in "${TLIST[@]}"; do
    [[ ${AVAIL[$t]:-0} == 1 ]] || echo "${t%%-*}: not available (${t}: ${WHY[$t]:-unknown})"
  done
  echo
  hdr="| round | workload | proto | -c |"; sep="|---|---|---|---|"
  for t in "${TLIST[@]}"; do hdr+=" $t |"; sep+="---|"; done
  for p in "${RATIOS[@]}"; do read -r a b <<<"$p"; hdr+=" ${a/pgbouncer/pgb}/${b/pgbouncer/pgb} |"; sep+="---|"; done
  echo "$hdr"; echo "$sep"
  for ((rd = 1; rd <= ROUNDS; rd++)); do
    for cell in "${CELLS[@]}"; do
      read -r w m c r <<<"$cell"
      row="| $rd | $(cell_label "$w" "$m" "$c" "$r") |"
      for t in "${TLIST[@]}"; do row+=" $(fmt_cell "$rd|$w|$m|$c|$r|$t") |"; done
      for p in "${RATIOS[@]}"; do read -r a b <<<"$p"; row+=" $(ratio "$rd|$w|$m|$c|$r|$a" "$rd|$w|$m|$c|$r|$b") |"; done
      echo "$row"
    done
  done
  echo
  echo "† other processes used > $FOREIGN_MAX cores during that run (contention; consider re-running)."
  echo
  echo "### Proxy CPU per transaction (µs, user+sys of the proxy process)"
  echo
  hdr="| round | workload | proto | -c |"; sep="|---|---|---|---|"
  for t in "${TLIST[@]}"; do [[ $t == direct ]] && continue; hdr+=" $t |"; sep+="---|"; done
  echo "$hdr"; echo "$sep"
  for ((rd = 1; rd <= ROUNDS; rd++)); do
    for cell in "${CELLS[@]}"; do
      read -r w m c r <<<"$cell"
      row="| $rd | $(cell_label "$w" "$m" "$c" "$r") |"
      for t in "${TLIST[@]}"; do
        [[ $t == direct ]] && continue
        k="$rd|$w|$m|$c|$r|$t"
        [[ ${TPS[$k]:-na} =~ ^[0-9.]+$ ]] && row+=" ${PXUS[$k]} |" || row+=" – |"
      done
      echo "$row"
    done
  done
  if (( IDLE > 0 )); then
    echo
    echo "### Memory: VmRSS (kB) with $IDLE idle authenticated clients"
    echo
    echo "| target | before | with $IDLE idle | per client | after close | at end | clients |"
    echo "|---|---|---|---|---|---|---|"
    for t in pgshift-tcp pgbouncer-tcp relay-tcp; do
      if [[ -z ${RSS1[$t]:-} ]]; then echo "| $t | n/a | n/a | – | – | – | ${WHY[$t]:-not run} |"; continue; fi
      per=$(awk -v a="${RSS0[$t]}" -v b="${RSS1[$t]}" -v n="$IDLE" 'BEGIN { printf "%.1f", (b - a) / n }')
      echo "| $t | ${RSS0[$t]} | ${RSS1[$t]} | $per | ${RSS2[$t]} | $(vmrss "${PID[$t]}") | ${IDLE_NOTE[$t]} |"
    done
  fi
  echo
  echo "Raw logs and results.tsv: $OUT"
} | tee "$OUT/report.md"
