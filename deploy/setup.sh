#!/usr/bin/env bash
# Installs everything Community Pulse needs on a fresh Debian machine, idempotently:
# the Debian packages (Java, Maven, Prometheus), a virtualenv with the package and its
# dev extras, and the Kafka broker jars (fetched by Maven into a cache outside git).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # the Debian package enables a system service; we start our own on 127.0.0.1 only
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    echo "setup: missing ${need_apt[*]}; install them (apt-get install ${need_apt[*]}) and run again" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi

echo "setup: Kafka jars"
"$VENV/bin/python" -c "from pipeline.stack.kafka import ensure_jars; print('setup: Kafka jars in', ensure_jars())"
