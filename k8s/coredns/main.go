// Command coredns is CoreDNS with the plugins a usernode node uses (see
// pkg/node/coredns) and a few for debugging, instead of upstream's full set
// (core/plugin), which links the route53, azure, clouddns, etcd, nomad and
// geoip plugins and their SDKs: twice the build time and binary size for
// nothing the node can use.
//
// The plugin chain order is upstream's, from plugin.cfg: dnsserver.Directives
// (core/dnsserver/zdirectives.go) is left as it is, and a Corefile directive
// whose plugin is not linked fails to load with "missing a plugin?".
// `coredns -plugins` lists what is linked.
package main

import (
	"github.com/coredns/coredns/coremain"

	// kubeadm's default Corefile (errors, health, ready, kubernetes,
	// prometheus, forward, cache, loop, reload, loadbalance) and bind.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	// For debugging and local overrides.
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func main() { coremain.Run() }
