// Command kube-node is the node's Kubernetes daemons, etcd and CoreDNS in
// one executable, each still run as a process of its own: kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy, etcd and
// coredns, picked by the name it is run as (hack/build-k8s.sh links each
// name to it) or by its first argument (`kube-node kubelet --config ...`).
//
// Why: most of each daemon's memory was its executable's pages, and the
// executables share most of their code (client-go, apimachinery, the API
// types, gRPC). Processes of one file share those pages; PSS splits them.
// Measured on an idle node (v1.37.2, docs/benchmarks.md): the five
// Kubernetes daemons' file-backed PSS went from 325 MB (five files) to 114
// MB, etcd's from 40 to 15 MB and CoreDNS's from 35 to 13 MB.
//
// Each command is upstream's own (app.NewXCommand run by cli.Run,
// etcdmain.Main, coremain.Run, as upstream's mains do), with the
// side-effect imports upstream's Kubernetes mains have: flags, config
// files and behaviour are theirs. The inits of every package run in every
// process, as they did in hyperkube (Kubernetes up to v1.18) and do in
// k3s. Go's global flag set is where that shows: kube-proxy adds it to its
// own flags (upstream's server.go), and here it holds what cadvisor (the
// kubelet's) and CoreDNS register, among them CoreDNS's -version, which
// took kube-proxy's --version (it started instead of printing). Upstream's
// kube-proxy has none of those flags, so it gets an empty global set.
//
// CoreDNS has the plugins a usernode node's Corefile uses
// (pkg/node/coredns), kubeadm's default Corefile's, and a few for
// debugging, not upstream's full set (core/plugin links the route53,
// azure, clouddns, etcd, nomad and geoip plugins and their SDKs). The
// plugin chain order is upstream's (dnsserver.Directives, from
// plugin.cfg); a Corefile directive whose plugin is not linked fails to
// load with "missing a plugin?". `coredns -plugins` lists what is linked.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"time"
	_ "time/tzdata" // kube-apiserver's and kube-controller-manager's mains import it (CronJob time zones)

	"github.com/coredns/coredns/coremain"
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"

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

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as every upstream main
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as every upstream main
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric, as every upstream main

	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func cobraMain(newCommand func() *cobra.Command) func() {
	return func() { os.Exit(cli.Run(newCommand())) }
}

var commands = map[string]func(){
	"kube-apiserver":          cobraMain(apiserver.NewAPIServerCommand),
	"kube-controller-manager": cobraMain(controllermanager.NewControllerManagerCommand),
	"kube-scheduler":          cobraMain(func() *cobra.Command { return scheduler.NewSchedulerCommand() }),
	"kubelet":                 cobraMain(func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) }),
	"kube-proxy": cobraMain(func() *cobra.Command {
		flag.CommandLine = flag.NewFlagSet(os.Args[0], flag.ExitOnError)
		return proxy.NewProxyCommand()
	}),
	// etcd's main (go.etcd.io/etcd/server/v3's root package) is this call.
	"etcd": func() { etcdmain.Main(os.Args) },
	// CoreDNS's main (coredns.go) is this call.
	"coredns": coremain.Run,
}

// SettledGOGCEnv names the Go GC target (a percentage, as GOGC) a daemon
// switches to SettleAfterEnv (a Go duration, default 60s) after it
// started, returning then what it can to the OS. The process starts with
// GOGC's: a low target costs most while the heap grows from nothing
// (GOGC=25 from the start took 25% more CPU to a node's Ready, measured),
// and saves memory only once the heap is settled. Both are unset before
// the daemon runs, so nothing it starts inherits them. pkg/node sets them
// (gotune.go, with the measurements).
const (
	SettledGOGCEnv = "KUBE_NODE_SETTLED_GOGC"
	SettleAfterEnv = "KUBE_NODE_SETTLE_AFTER"
)

func settleGC() {
	pct, after := os.Getenv(SettledGOGCEnv), os.Getenv(SettleAfterEnv)
	_ = os.Unsetenv(SettledGOGCEnv) // Unsetenv fails only on a bad name
	_ = os.Unsetenv(SettleAfterEnv)
	if pct == "" {
		return
	}
	p, err := strconv.Atoi(pct)
	if err != nil || p <= 0 {
		fmt.Fprintf(os.Stderr, "kube-node: %s=%q is not a positive percentage; the GC target is left as GOGC set it\n", SettledGOGCEnv, pct)
		return
	}
	d := time.Minute
	if after != "" {
		if d, err = time.ParseDuration(after); err != nil {
			fmt.Fprintf(os.Stderr, "kube-node: %s=%q: %v; the GC target is left as GOGC set it\n", SettleAfterEnv, after, err)
			return
		}
	}
	time.AfterFunc(d, func() {
		debug.SetGCPercent(p)
		// Now, not at the next collection: the start's garbage is spread
		// over pages the background scavenger gives back slowly (the lower
		// target alone took kube-apiserver 191 -> 183 MB PSS in 3 min,
		// against 167-171 with GOGC=25 from the start).
		debug.FreeOSMemory()
	})
}

func main() {
	settleGC()
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		// `kube-node NAME ARGS...`: NAME becomes the program's name, as
		// if run through its link.
		name = os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	run, ok := commands[name]
	if !ok {
		var names []string
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "kube-node: run it as one of %v (a link of that name, or its first argument)\n", names)
		os.Exit(2)
	}
	run()
}
