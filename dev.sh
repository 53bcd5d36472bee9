#!/usr/bin/env bash
# The project's single entry point:
#   ./dev.sh demo                 run demo.py
#   ./dev.sh test [pytest args]   run the tests (with no args: against pouchdb-server, then
#                                 the server-facing ones against the fake), build the guide
#   ./dev.sh bench [args]         run the benchmarks
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.corduroy2-install-stamp"

usage() {
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest args...] | ./dev.sh bench [args...]" >&2
    exit 2
}

ensure_venv() {
    if [[ ! -x "$PY" ]]; then
        python3 -m venv "$VENV"
    fi
    # Reinstall only when the packaging metadata changed: pip is slow even
    # when there is nothing to do.
    local files=() digest
    for f in setup.py pyproject.toml; do
        [[ -f "$f" ]] && files+=("$f")
    done
    digest=$(cat "${files[@]}" /dev/null | sha256sum | cut -d' ' -f1)
    if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$digest" ]]; then
        "$VENV/bin/pip" install -q -e ".[tornado,twisted,curl,aiohttp,httptools,test,docs,cli]"
        echo "$digest" >"$STAMP"
    fi
}

ensure_node() {
    # The tests run against pouchdb-server, which npm installs on first use.
    if command -v node >/dev/null && command -v npm >/dev/null; then
        return
    fi
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "dev.sh: node/npm missing, installing nodejs and npm with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q nodejs npm
    else
        echo "dev.sh: node and npm are required for the tests (they run pouchdb-server);" \
             "install Node.js, e.g. 'sudo apt-get install nodejs npm'" >&2
        exit 1
    fi
}

run_tests() {
    ensure_node
    local status=0
    # pytest exits 5 when it collected nothing; that is a failure here too.
    if [[ $# -gt 0 ]]; then
        "$PY" -m pytest "$@" || status=$?
    else
        # Everything against pouchdb-server (or COUCHDB_URL); then the server-facing tests
        # again against corduroy2.testing.FakeCouch, the third server (issue 17).
        "$PY" -m pytest tests/ -q || status=$?
        if [[ -z "${COUCHDB_URL:-}" ]]; then
            COUCHDB_SERVER=fake "$PY" -m pytest tests/behaviour tests/auth/test_real_server.py \
                -q || status=$?
        fi
    fi
    if [[ -f guide/conf.py ]]; then
        "$PY" -m sphinx -W --keep-going -b html guide .cache/guide-html -q || status=$?
    fi
    return "$status"
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case "$cmd" in
    test)
        ensure_venv
        run_tests "$@"
        ;;
    demo)
        ensure_venv
        exec "$PY" demo.py "$@"
        ;;
    bench)
        ensure_venv
        exec "$PY" -m bench "$@"
        ;;
    *)
        usage
        ;;
esac
