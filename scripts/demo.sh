#!/usr/bin/env bash
# Runs `pgshift demo`: a throwaway Postgres with pgshift in front of it. Installs
# what it needs first on Debian, or says exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_deps
exec cargo run --release --quiet -- demo "$@"
