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
    # A fresh cloud machine runs its first-boot updates: wait for their lock, then let
    # apt-get itself wait too (a lock taken between the check and apt-get).
    "$(dirname "$0")/wait-for-dpkg-lock.sh"
    wait_s="${SCI_AGENT_APT_LOCK_TIMEOUT:-300}"
    apt-get -o DPkg::Lock::Timeout="$wait_s" update -qq
    apt-get -o DPkg::Lock::Timeout="$wait_s" install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
else
    echo "note: the tests need these Debian packages: ${missing[*]}"
    echo "      install them with: sudo apt-get install ${missing[*]}"
    echo "      (tests that need them are skipped until then)"
fi
