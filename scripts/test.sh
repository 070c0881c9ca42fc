#!/usr/bin/env bash
# Runs pgshift's test suite. On a fresh Debian machine it first installs what the
# tests need (Postgres server binaries, psql, pgbench, psycopg, a JDK and PgJDBC); elsewhere it says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_deps test
exec cargo test --all-targets "$@"
