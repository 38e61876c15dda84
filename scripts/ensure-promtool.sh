#!/usr/bin/env bash
# Put promtool, Prometheus's checker of configs and rules (Debian's package `prometheus`), at TARGET
# (default .venv/bin/promtool) unless one is on the PATH or there already: the tests of monitoring/ run it.
# Only the binary is taken out of the package with dpkg-deb: installing the package would also create a
# user and start a Prometheus server. Bounded in time, and never fails `make test`: without promtool those
# tests skip and say why.
set -uo pipefail
TARGET=$(realpath -m "${1:-.venv/bin/promtool}")
LIMIT_S=${PROMTOOL_INSTALL_TIMEOUT_S:-120}

if command -v promtool >/dev/null 2>&1; then
  echo "promtool: $(command -v promtool)"
  exit 0
fi
if [ -x "$TARGET" ]; then
  echo "promtool: $TARGET"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "promtool: not installed and no apt-get here; the promtool tests will skip"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
download() {
  (cd "$work" && timeout "$LIMIT_S" apt-get download -qq prometheus >/dev/null 2>&1)
}
echo "promtool: taking it out of Debian's package prometheus"
if ! download; then
  # A fresh machine has no package lists yet; only root can fetch them.
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    timeout "$LIMIT_S" apt-get update -qq >/dev/null 2>&1
    download
  fi
fi
deb=$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n 1)
if [ -z "$deb" ]; then
  echo "promtool: could not download the package prometheus; the promtool tests will skip"
  exit 0
fi
dpkg-deb -x "$deb" "$work/root"
if [ ! -x "$work/root/usr/bin/promtool" ]; then
  echo "promtool: the package has no usr/bin/promtool; the promtool tests will skip"
  exit 0
fi
mkdir -p "$(dirname "$TARGET")"
cp "$work/root/usr/bin/promtool" "$TARGET"
echo "promtool: $("$TARGET" --version 2>&1 | head -n 1) at $TARGET"
