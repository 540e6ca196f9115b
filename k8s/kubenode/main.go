// Command kube-node is the node's five Kubernetes daemons in one
// executable, each still run as a process of its own: kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet and kube-proxy, picked
// by the name it is run as (hack/build-k8s.sh links each name to it) or by
// its first argument (`kube-node kubelet --config ...`).
//
// Why: most of each daemon's memory is its executable's pages, and the
// five executables share most of their code (client-go, apimachinery, the
// API types). Five processes of one file share those pages; PSS splits
// them. Measured on a idle node (v1.37.2, docs/benchmarks.md): 325 MB of
// the five daemons' 609 MB PSS was file-backed, each file its own.
//
// Each command is upstream's own (app.NewXCommand, run by cli.Run as
// upstream's main does), with the same side-effect imports every one of
// upstream's five mains has: flags, config files and behaviour are theirs.
// The inits of all five packages run in every process, as they did in
// hyperkube (Kubernetes up to v1.18) and do in k3s.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // kube-apiserver's and kube-controller-manager's mains import it (CronJob time zones)

	"github.com/spf13/cobra"

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

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		// `kube-node NAME ARGS...`: NAME becomes the program's name, as
		// if run through its link.
		name = os.Args[1]
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	newCommand, ok := commands[name]
	if !ok {
		var names []string
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "kube-node: run it as one of %v (a link of that name, or its first argument)\n", names)
		os.Exit(2)
	}
	os.Exit(cli.Run(newCommand()))
}
