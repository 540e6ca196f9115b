#!/usr/bin/env bash
# From a fresh machine to a rootless node with kubectl answering:
# installs the packages (when run as root), builds usernode and Kubernetes
# (cached after the first time, ~19 min on 2 idle cores), brings the node up as a
# regular user and runs kubectl against it. Run as root it uses the account
# usernode-test, since a rootless node never runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
if [ "$(id -u)" -eq 0 ]; then
  ./hack/install-deps.sh
  ./hack/test-user.sh >/dev/null
  bindir=/opt/usernode-k8s       # readable by the node's account
else
  bindir=""
fi
make build
bindir=$(GO=go ./hack/build-k8s.sh $bindir | tail -n1)
./hack/run-as-user.sh ./bin/usernode doctor || true   # degraded mode is fine
./hack/run-as-user.sh ./bin/usernode up --detach --bin-dir "$bindir" "$@"
user=${USERNODE_USER:-usernode-test}
[ "$(id -u)" -eq 0 ] || user=$(id -un)
home=$(getent passwd "$user" | cut -d: -f6)
kc="${XDG_DATA_HOME:-$home/.local/share}/usernode/usernode/kubeconfig"
[ "$(id -u)" -eq 0 ] && kc="$home/.local/share/usernode/usernode/kubeconfig"
"$bindir/kubectl" --kubeconfig "$kc" get nodes -o wide
echo
echo "The node runs in the background. Try:"
echo "  $bindir/kubectl --kubeconfig $kc get pods -A"
echo "  ./hack/run-as-user.sh ./bin/usernode status"
echo "  ./hack/run-as-user.sh ./bin/usernode down"
