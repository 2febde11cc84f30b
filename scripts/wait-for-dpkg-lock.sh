#!/usr/bin/env bash
# Wait until no other apt/dpkg process holds the dpkg or apt locks (a fresh cloud machine
# runs its first-boot updates for minutes), then exit 0; after the timeout, exit 1 with
# one line saying what to do. Used by install-debian-deps.sh before apt-get.
#   SCI_AGENT_APT_LOCK_TIMEOUT  seconds to wait (default 300)
#   SCI_AGENT_DPKG_LOCKS        the lock files (default: dpkg's and apt's own)
set -euo pipefail

timeout_s="${SCI_AGENT_APT_LOCK_TIMEOUT:-300}"
locks="${SCI_AGENT_DPKG_LOCKS:-/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock}"
python="$(command -v python3 || command -v python || true)"

# Exit 0 when one of the files is locked now (dpkg and apt take fcntl locks, as lockf does).
held() {
    [ -n "$python" ] || return 1   # nothing to probe with: apt-get's own Lock::Timeout waits
    "$python" - "$@" <<'PY'
import fcntl, sys
for path in sys.argv[1:]:
    try:
        with open(path, "r+") as f:  # never creates a file
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(0)
    except OSError:
        continue  # absent or not ours to open: not a lock we must wait for
sys.exit(1)
PY
}

start=$SECONDS
said=0
# shellcheck disable=SC2086  # the lock list is split on spaces on purpose
while held $locks; do
    if [ "$said" -eq 0 ]; then
        echo "waiting for another apt process (dpkg lock) to finish, up to ${timeout_s} s…"
        said=1
    fi
    if [ $((SECONDS - start)) -ge "$timeout_s" ]; then
        echo "error: another apt process still holds the dpkg lock after ${timeout_s} s" \
             "(see: ps -ef | grep -E 'apt|dpkg'); run make test again once it is done" >&2
        exit 1
    fi
    sleep 1
done
if [ "$said" -eq 1 ]; then
    echo "the dpkg lock is free after $((SECONDS - start)) s"
fi
