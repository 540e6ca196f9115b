#!/usr/bin/env bash
# Creates the two non-root accounts the multi-node benchmark runs its
# nodes as, one per "host" (bench/multinode; `make bench-multinode` runs
# this). Idempotent. Not usernode-test: the integration tests count that
# account's processes and may run at the same time. usernode itself never
# runs as root; this is set-up only.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "accounts.sh: run as root (make bench-multinode does)" >&2
  exit 1
fi

# add_user NAME START: an account with 65536 subordinate IDs from START,
# far above what useradd hands out (100000+) and hack/test-user.sh's
# (1000000000+), so the ranges never overlap another account's.
add_user() {
  local n=$1 start=$2 f
  id "$n" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group "$n"
  for f in /etc/subuid /etc/subgid; do
    touch "$f"
    if ! grep -qx "$n:$start:65536" "$f"; then
      # useradd may have allocated a range already: replace it with ours.
      sed -i -E "/^$n:/d" "$f"
      echo "$n:$start:65536" >>"$f"
    fi
  done
}

add_user unbench-a 1100000000
add_user unbench-b 1100131072
# slirp4netns needs /dev/net/tun open to users (Debian's default mode; as
# hack/test-user.sh).
if [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi
echo "bench accounts: $(grep -E '^unbench-' /etc/subuid | tr '\n' ' ')"
