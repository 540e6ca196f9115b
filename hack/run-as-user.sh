#!/usr/bin/env bash
# Runs a command as the account that owns the node. A rootless node never
# runs as root: when called by root this drops to the test account (created
# on demand), otherwise it runs the command as the caller.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then exec "$@"; fi
name=${USERNODE_USER:-usernode-test}
id "$name" >/dev/null 2>&1 || USERNODE_TEST_USER="$name" "$(dirname "$0")/test-user.sh" >&2
uid=$(id -u "$name")
# The command's path may sit under root's 0700 home: copy it somewhere the
# account can read.
bin=$1; shift
if [ -f "$bin" ]; then
  tmp=$(mktemp -d /tmp/usernode-run.XXXXXX); chmod 0755 "$tmp"
  cp "$bin" "$tmp/"; bin="$tmp/$(basename "$bin")"
fi
rt=/run/user/$uid
mkdir -p "$rt" && chown "$name:" "$rt" && chmod 0700 "$rt"
cd /
exec setpriv --reuid="$uid" --regid="$(id -g "$name")" --init-groups \
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME="$(getent passwd "$name" | cut -d: -f6)" USER="$name" LOGNAME="$name" \
  XDG_RUNTIME_DIR="$rt" TERM="${TERM:-dumb}" "$bin" "$@"
