#!/usr/bin/env bash
# Install the Debian packages the test suite needs. As root (CI) they are installed;
# otherwise this prints what to install, and the tests that need them skip with that
# reason (except under CI=true, where a missing dependency fails).
set -euo pipefail

# package → the command that shows it is installed
declare -A PACKAGES=(
    [systemd]=systemd-analyze
    [influxdb]=influxd
    [victoria-metrics]=victoria-metrics
    [prometheus]=promtool
    [prometheus-alertmanager]=prometheus-alertmanager
    [chromium]=chromium
    [chromium-driver]=chromedriver
)

missing=()
for pkg in "${!PACKAGES[@]}"; do
    command -v "${PACKAGES[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "note: the tests need these Debian packages: ${missing[*]}"
    echo "      install them with: sudo apt-get install ${missing[*]}"
    echo "      (tests that need them are skipped until then)"
fi
