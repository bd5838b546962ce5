#!/usr/bin/env bash
# The test command (README "Test", and what .ci/run calls): on a fresh Debian/Ubuntu machine it installs the
# system programs the service's tests start when they are missing (Debian's redis-server and PostgreSQL,
# chromium for the web form's browser test), makes .venv with the ML and dev extras, and runs the suite.
#   bash scripts/test.sh                  # the whole suite
#   bash scripts/test.sh -m "not slow"    # the fast lane; any pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

APT_PACKAGES="redis-server postgresql chromium"
missing=""
for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null; then
        echo "scripts/test.sh: the tests need these programs, and this machine has no apt-get to install them:$missing" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "scripts/test.sh: installing$missing needs root; run as root or install sudo" >&2
            exit 1
        fi
        SUDO="sudo"
    fi
    echo "scripts/test.sh: installing the system packages the tests start:$missing"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The ML extras (torch with its CUDA libraries) take about 7.5 GB in .venv: say so plainly before pip runs out
# of disk half-way (pip's own message is "[Errno 28] No space left on device" after minutes of work).
if ! [ -x .venv/bin/python ] || ! .venv/bin/python -c "import torch" 2>/dev/null; then
    need_kb=$((9 * 1024 * 1024))
    free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt "$need_kb" ]; then
        echo "scripts/test.sh: $(pwd) has $((free_kb / 1024 / 1024)) GB free; installing .venv needs about 9 GB. Free some disk and run again." >&2
        exit 1
    fi
fi
export PIP_NO_CACHE_DIR=1
python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'
exec .venv/bin/python -m pytest -q "$@"
