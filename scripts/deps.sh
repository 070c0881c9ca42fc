# Sourced by the scripts in this folder: finds or installs what pgshift builds and
# tests with (`ensure_deps test`: the tests' extras too). Debian package names; run
# as root (CI) or with sudo available.

ensure_deps() {
    local missing=()
    command -v cargo >/dev/null || {
        echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
        exit 1
    }
    if [ -z "${PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    command -v psql >/dev/null || missing+=(postgresql-client)
    if [ -z "${PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 \
        && ! command -v pgbench >/dev/null; then
        missing+=(postgresql-contrib)
    fi
    # pg_query (the Postgres parser) generates its bindings with libclang (libclang-cpp,
    # which other packages pull in, is a different library and does not do).
    if [ -z "${LIBCLANG_PATH:-}" ] && ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so* >/dev/null 2>&1; then
        missing+=(libclang-dev)
    fi
    # psycopg 3 for the test that reads through a rollout's cutover with it
    # (tests/clients/psycopg_reader.py runs on Debian's python3), and
    if [ "${1:-}" = test ] && ! /usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1; then
        missing+=(python3-psycopg)
    fi
    # PgJDBC and a JDK (its source launcher runs tests/clients/JdbcReader.java) for
    # the same test with PgJDBC.
    if [ "${1:-}" = test ]; then
        command -v javac >/dev/null || missing+=(default-jdk-headless)
        [ -e /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then
            sudo="sudo"
        else
            echo "missing Debian packages: ${missing[*]}; install them with: apt-get install -y ${missing[*]}" >&2
            exit 1
        fi
    fi
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
