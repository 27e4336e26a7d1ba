#!/usr/bin/env bash
# Installs the Debian packages Coffer needs when they are missing (run as root, or with sudo).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# Debian splits venv/ensurepip out of python3.11 itself.
PY=${PYTHON:-python3.11}
if command -v "$PY" >/dev/null 2>&1 && ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  need+=(python3-venv)
fi
command -v "$PY" >/dev/null 2>&1 || need+=(python3.11 python3.11-venv)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start system-wide servers; Coffer runs its own private ones.
