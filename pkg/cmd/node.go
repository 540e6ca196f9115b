package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/usernode/usernode/pkg/doctor"
	"github.com/usernode/usernode/pkg/network/drivers"
	"github.com/usernode/usernode/pkg/node"
	"github.com/usernode/usernode/pkg/sandbox"
)

func init() {
	register(upCommand)
	register(downCommand)
	register(statusCommand)
	register(logsCommand)
	register(kubeconfigCommand)
}

func upCommand() *cobra.Command {
	var nf nodeFlags
	var o node.Options
	var netDriver string
	var detach bool
	var timeout time.Duration
	var pf portFlags
	c := &cobra.Command{
		Use:   "up",
		Short: "Bring up a single-node Kubernetes cluster as your user",
		Long: `Bring up a single-node Kubernetes cluster inside the node's sandbox:
containerd, etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
CoreDNS, the kubelet and kube-proxy, all as your user. kube-apiserver (6443) and the
kubelet (10250) are forwarded to the host's 127.0.0.1, and so is every
NodePort. The kubeconfig is printed by ` + "`usernode kubeconfig`" + `.

Without --detach, up stays in the foreground and stops the node on Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := nf.nodeConfig()
			if err != nil {
				return err
			}
			// The config file fills what the command line left unset.
			file, flags := nf.file, c.Flags()
			if file.Net != "" && !flags.Changed("net") {
				netDriver = file.Net
			}
			if file.BinDir != "" && !flags.Changed("bin-dir") {
				o.BinDir = file.BinDir
			}
			if file.APIPort != 0 && !flags.Changed("api-port") {
				o.APIPort = file.APIPort
			}
			if file.KubeletPort != 0 && !flags.Changed("kubelet-port") {
				o.KubeletPort = file.KubeletPort
			}
			cfg.Net = netDriver
			cfg.PortOptions = nf.portOptions(pf)
			o.Sandbox = cfg
			o.ReadyTimeout = timeout
			if detach {
				if _, err := node.Check(&o); err != nil {
					return err
				}
				args := []string{"up", "--name", nf.name, "--net", netDriver, "--timeout", timeout.String(), "--state-dir", cfg.StateDir}
				if nf.configFile != "" {
					args = append(args, "--config", nf.configFile)
				}
				if o.BinDir != "" {
					args = append(args, "--bin-dir", o.BinDir)
				}
				args = append(args, "--api-port", fmt.Sprint(o.APIPort), "--kubelet-port", fmt.Sprint(o.KubeletPort))
				args = append(args, portArgs(cfg.PortOptions)...)
				if o.WriteKubeconfig != "" {
					args = append(args, "--write-kubeconfig", o.WriteKubeconfig)
				}
				if err := node.Detach(cfg, args, timeout+time.Minute, c.ErrOrStderr()); err != nil {
					return err
				}
				fmt.Fprintf(c.ErrOrStderr(), "usernode: running in the background; try: kubectl --kubeconfig %s get nodes\n", node.PathsOf(cfg).Kubeconfig())
				return nil
			}
			if o.SandboxOpt, err = sandboxOpt(cfg, c.ErrOrStderr()); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return node.Up(ctx, o, c.ErrOrStderr(), notifyReady)
		},
	}
	nf.add(c.Flags())
	c.Flags().StringVar(&o.BinDir, "bin-dir", "", "directory with kubelet, kube-apiserver, ... and etcd (default: the `make k8s` cache, then PATH)")
	c.Flags().StringVar(&netDriver, "net", drivers.Default, "network driver: "+netDriverNames())
	c.Flags().BoolVarP(&detach, "detach", "d", false, "return once the node is Ready and leave it running in the background")
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the node to be Ready")
	c.Flags().Uint16Var(&o.APIPort, "api-port", 6443, "host port on 127.0.0.1 for kube-apiserver")
	c.Flags().Uint16Var(&o.KubeletPort, "kubelet-port", 10250, "host port on 127.0.0.1 for the kubelet's API")
	pf.add(c.Flags())
	c.Flags().StringVar(&o.WriteKubeconfig, "write-kubeconfig", "", "also merge the node's context into this kubeconfig (e.g. ~/.kube/config) and make it current")
	return c
}

// nodeConfig resolves a node's sandbox config without a command.
func (f *nodeFlags) nodeConfig() (sandbox.Config, error) { return f.config([]string{"-"}) }

func downCommand() *cobra.Command {
	var nf nodeFlags
	var purge bool
	c := &cobra.Command{
		Use:   "down",
		Short: "Stop the node; its state stays for the next up (--purge removes it)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := nf.nodeConfig()
			if err != nil {
				return err
			}
			err = node.Down(cfg, 3*time.Minute)
			if err != nil && !purge {
				return err
			}
			if err == nil {
				fmt.Fprintf(c.ErrOrStderr(), "usernode: node %q stopped; its state is kept in %s\n", cfg.Name, cfg.StateDir)
			}
			if purge {
				if err := node.Purge(cfg); err != nil {
					return err
				}
				fmt.Fprintf(c.ErrOrStderr(), "usernode: removed %s\n", cfg.StateDir)
			}
			return nil
		},
	}
	nf.add(c.Flags())
	c.Flags().BoolVar(&purge, "purge", false, "also remove the node's state (etcd data, images, PKI)")
	return c
}

func statusCommand() *cobra.Command {
	var nf nodeFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the node's components, their PIDs and health, and the forwarded ports",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := nf.nodeConfig()
			if err != nil {
				return err
			}
			st, err := node.GetStatus(c.Context(), cfg)
			if err != nil {
				return err
			}
			out := statusOutput{Status: st, Doctor: doctorVerdict(c.Context())}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			printStatus(c.OutOrStdout(), st)
			printVerdict(c.OutOrStdout(), out.Doctor)
			return nil
		},
	}
	nf.add(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// statusOutput is `status --json`: the node's status, and doctor's verdict
// on this host now (the mode in use is the sandbox's cgroup.mode).
type statusOutput struct {
	*node.Status
	Doctor *verdict `json:"doctor,omitempty"`
}

type verdict struct {
	doctor.Summary
	// Problems are the checks that did not pass: "WARN id", "FAIL id".
	Problems []string `json:"problems,omitempty"`
}

// doctorVerdict runs doctor's checks but the namespace trial (the running
// node proves that one) and sums them up.
func doctorVerdict(ctx context.Context) *verdict {
	sys, err := doctor.Host()
	if err != nil {
		return nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	var ids []string
	for _, id := range doctor.IDs() {
		if id != "trial.namespaces" {
			ids = append(ids, id)
		}
	}
	rep := doctor.Run(ctx, sys, ids...)
	v := &verdict{Summary: rep.Summary}
	for _, r := range rep.Checks {
		if r.Status == doctor.Warn || r.Status == doctor.Fail {
			v.Problems = append(v.Problems, string(r.Status)+" "+r.ID)
		}
	}
	return v
}

func printVerdict(w io.Writer, v *verdict) {
	if v == nil {
		return
	}
	fmt.Fprintf(w, "doctor: %s (%d pass, %d warn, %d fail)", v.Mode, v.Pass, v.Warn, v.Fail)
	if len(v.Problems) > 0 {
		fmt.Fprintf(w, ": %s; `usernode doctor` says why", strings.Join(v.Problems, ", "))
	}
	fmt.Fprintln(w)
}

func printStatus(w io.Writer, st *node.Status) {
	fmt.Fprintf(w, "node %s: %s (cgroups %s", st.Sandbox.Name, st.Node.Phase, st.Sandbox.Cgroup.Mode)
	if st.Sandbox.Network != nil {
		fmt.Fprintf(w, ", net %s %s", st.Sandbox.Network.Driver, st.Sandbox.Network.Address)
	}
	fmt.Fprintln(w, ")")
	if st.Sandbox.Cgroup.Reason != "" {
		fmt.Fprintf(w, "  degraded: %s\n", st.Sandbox.Cgroup.Reason)
	}
	if st.Node.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", st.Node.Error)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tPID\tSTATE\tRESTARTS\tSINCE")
	for _, cs := range st.Node.Components {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\n", cs.Name, cs.PID, cs.State, cs.Restarts, time.Since(cs.Since).Round(time.Second))
	}
	tw.Flush()
	if len(st.Ports) > 0 {
		fmt.Fprintln(w, "forwarded ports:")
		for _, p := range st.Ports {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

func logsCommand() *cobra.Command {
	var nf nodeFlags
	var follow bool
	c := &cobra.Command{
		Use:   "logs COMPONENT",
		Short: "Show a component's log (containerd, etcd, kube-apiserver, kubelet, ..., supervisor)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := nf.nodeConfig()
			if err != nil {
				return err
			}
			dir := node.PathsOf(cfg).Logs()
			path := filepath.Join(dir, filepath.Base(args[0])+".log")
			f, err := os.Open(path)
			if err != nil {
				known, _ := filepath.Glob(filepath.Join(dir, "*.log"))
				for i := range known {
					known[i] = filepath.Base(known[i][:len(known[i])-4])
				}
				return fmt.Errorf("no log for %q in %s (have: %v)", args[0], dir, known)
			}
			defer f.Close()
			if _, err := io.Copy(c.OutOrStdout(), f); err != nil {
				return err
			}
			for follow {
				time.Sleep(250 * time.Millisecond)
				if _, err := io.Copy(c.OutOrStdout(), f); err != nil {
					return err
				}
			}
			return nil
		},
	}
	nf.add(c.Flags())
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what is appended")
	return c
}

func kubeconfigCommand() *cobra.Command {
	var nf nodeFlags
	c := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig for the node's cluster (server https://127.0.0.1:6443)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := nf.nodeConfig()
			if err != nil {
				return err
			}
			b, err := os.ReadFile(node.PathsOf(cfg).Kubeconfig())
			if err != nil {
				return fmt.Errorf("no kubeconfig for node %q yet: run `usernode up` first (%v)", cfg.Name, err)
			}
			_, err = c.OutOrStdout().Write(b)
			return err
		},
	}
	nf.add(c.Flags())
	return c
}
