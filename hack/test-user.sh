#!/usr/bin/env bash
# Creates the unprivileged account that integration tests run as when `make
# test` is run by root (as CI does). Idempotent. usernode itself never runs as
# root; this script is test set-up only.
set -euo pipefail
name=${USERNODE_TEST_USER:-usernode-test}
if [ "$(id -u)" -ne 0 ]; then
  echo "test-user.sh: run as root (tests run as your own account when you are not root)" >&2
  exit 1
fi

# add_user NAME COUNT: an account with COUNT subordinate IDs (0 = none).
add_user() {
  local n=$1 count=$2 uid start f
  id "$n" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --user-group "$n"
  uid=$(id -u "$n")
  # A range of its own, far above the ranges useradd hands out (100000+),
  # so it never overlaps another account's.
  start=$((1000000000 + (uid % 1000) * 65536 * 2))
  for f in /etc/subuid /etc/subgid; do
    touch "$f"
    # useradd may have allocated a range already: replace it with ours.
    sed -i -E "/^($n|$uid):/d" "$f"
    if [ "$count" -gt 0 ]; then echo "$n:$start:$count" >> "$f"; fi
  done
}

add_user "$name" 65536
# The second host's user of the multi-node test: two users, as on two
# machines, each with a range of its own.
add_user usernode-test2 65536
# Bad-input tests: an account with no ranges and one with a short range.
add_user usernode-nosubid 0
add_user usernode-shortsubid 1000
# Debian's default mode; some images ship 0600, which makes slirp4netns and
# pasta fail with EACCES (usernode doctor reports that case).
if [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi
echo "test users: $(grep -E "^usernode-" /etc/subuid | tr "\n" " ")"
