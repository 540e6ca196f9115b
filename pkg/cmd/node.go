package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/doctor"
	"github.com/usernode/usernode/pkg/node"
)

func init() {
	register(upCommand)
	register(downCommand)
	register(statusCommand)
	register(logsCommand)
	register(kubeconfigCommand)
}

func upCommand() *cobra.Command {
	var cf configFlags
	var detach bool
	c := &cobra.Command{
		Use:   "up",
		Short: "Bring up a Kubernetes node as your user: a cluster's control plane, or a worker it joined",
		Long: `Bring up a Kubernetes node inside its sandbox (a one-node cluster by default):
the CRI runtime (containerd), etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, CoreDNS, the kubelet, the pod network and kube-proxy, all as
your user. kube-apiserver (6443) and the kubelet (10250) are forwarded to the
host's 127.0.0.1 (--host-ip), and so is every NodePort. The kubeconfig is
printed by ` + "`usernode kubeconfig`" + `.

Every flag but --detach and --config may also be set in the config file
(README: "Config file"); flags win over it.

With --host-ip set to an address other hosts reach, the node is a control
plane they can join (` + "`usernode token create`, then `usernode join`" + ` there).
A node that joined a cluster (its state dir records it) starts as that
worker again.

Without --detach, up stays in the foreground and stops the node on Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			l := newLogger(c)
			cl, err := cf.resolve()
			if err != nil {
				return err
			}
			return runUp(cl, detach, l)
		},
	}
	cf.add(c.Flags(), cluster.AllFlags)
	c.Flags().Lookup("net").Usage += ": " + netDriverNames()
	c.Flags().Lookup("cri").Usage += ": " + strings.Join(node.Runtimes.Names(), ", ")
	c.Flags().Lookup("cni").Usage += ": " + strings.Join(node.CNIs.Names(), ", ")
	c.Flags().BoolVarP(&detach, "detach", "d", false, "return once the node is Ready and leave it running in the background")
	return c
}

// runUp runs cl's node: in the foreground, or, with detach, in the
// background once it is Ready. `up` and `join` end here.
func runUp(cl *cluster.Cluster, detach bool, l *log.Logger) error {
	if v := l.V(1); v.Enabled() {
		b, _ := json.MarshalIndent(cl, "", "  ")
		v.Infof("the cluster model, resolved from the config file and the flags:\n%s", b)
	}
	if detach && os.Getenv(node.ForegroundEnv) == "" {
		sb, err := node.SandboxConfig(cl, os.Getenv)
		if err != nil {
			return err
		}
		// Checked here too, so that a port in use or a missing
		// binary is said at once, not from the background.
		if _, err := node.Check(cl, sb); err != nil {
			return err
		}
		// The same command line again: it resolves the same config.
		if err := node.Detach(sb, os.Args[1:], cl.Options.ReadyTimeout+time.Minute, l); err != nil {
			return err
		}
		if cl.Self().Role == cluster.Worker {
			l.Infof("running in the background; on the control plane, kubectl get nodes lists %s", cl.Self().Name)
		} else {
			l.Infof("running in the background; try: kubectl --kubeconfig %s get nodes", node.PathsOf(sb).Kubeconfig())
		}
		return nil
	}
	opt, err := sandboxOpt(cl.Options.Net, l)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return node.Up(ctx, cl, opt, notifyReady)
}

func downCommand() *cobra.Command {
	var cf configFlags
	var purge, drain bool
	var drainTimeout time.Duration
	c := &cobra.Command{
		Use:   "down",
		Short: "Stop the node; its state stays for the next up (--purge removes it)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := cf.node()
			if err != nil {
				return err
			}
			if drain {
				if err := node.Drain(c.Context(), cfg, drainTimeout, newLogger(c)); err != nil {
					return err
				}
			}
			err = node.Down(cfg, 3*time.Minute)
			if err != nil && !purge {
				return err
			}
			if err == nil {
				newLogger(c).Infof("node %q stopped; its state is kept in %s", cfg.Name, cfg.StateDir)
			}
			if purge {
				if err := node.Purge(cfg); err != nil {
					return err
				}
				newLogger(c).Infof("removed %s", cfg.StateDir)
			}
			return nil
		},
	}
	cf.add(c.Flags(), cluster.NodeFlags)
	c.Flags().BoolVar(&purge, "purge", false, "also remove the node's state (etcd data, images, PKI)")
	c.Flags().BoolVar(&drain, "drain", false, "first cordon the node and evict its pods (as kubectl drain --ignore-daemonsets), so that they move to the cluster's other nodes; the next up uncordons it")
	c.Flags().DurationVar(&drainTimeout, "drain-timeout", 2*time.Minute, "how long --drain waits for the pods to go; the node keeps running if they do not")
	return c
}

func statusCommand() *cobra.Command {
	var cf configFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the node's components, their PIDs and health, and the forwarded ports",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := cf.node()
			if err != nil {
				return err
			}
			st, err := node.GetStatus(c.Context(), cfg)
			if err != nil {
				return err
			}
			model, err := cf.load()
			if err != nil {
				return err
			}
			// The running node's runtime and search are what `up` was
			// given, which may have been flags this command lacks.
			if sp := st.Spec(); sp != nil && sp.Cluster != nil && len(sp.Cluster.Nodes) > 0 {
				model.CRI, model.BinDir, model.Containerd = sp.Cluster.Self().CRI, sp.Cluster.Options.BinDir, sp.Cluster.Options.Containerd
			}
			out := statusOutput{Status: st, Doctor: doctorVerdict(c.Context(), model)}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			var b strings.Builder
			if err := printStatus(&b, st); err != nil {
				return err
			}
			printVerdict(&b, out.Doctor)
			_, err = io.WriteString(c.OutOrStdout(), b.String())
			return err
		},
	}
	cf.add(c.Flags(), cluster.NodeFlags)
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

// doctorVerdict runs doctor's checks but the trials and the port check
// and sums them up, judging the runtimes by model's.
func doctorVerdict(ctx context.Context, model *cluster.Config) *verdict {
	sys, err := doctor.Host()
	if err != nil {
		return nil
	}
	sys.UseModel(model)
	if ctx == nil {
		ctx = context.Background()
	}
	// The running node proves the trials, and holds the multi-node ports
	// itself.
	var ids []string
	for _, id := range doctor.IDs() {
		if id != "trial.namespaces" && id != "trial.vxlan" && id != "multinode.ports" {
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

// printVerdict adds doctor's one-line verdict, if there is one, to status's
// text.
func printVerdict(w *strings.Builder, v *verdict) {
	if v == nil {
		return
	}
	fmt.Fprintf(w, "doctor: %s (%d pass, %d warn, %d fail)", v.Mode, v.Pass, v.Warn, v.Fail)
	if len(v.Problems) > 0 {
		fmt.Fprintf(w, ": %s; `usernode doctor` says why", strings.Join(v.Problems, ", "))
	}
	fmt.Fprintln(w)
}

// printStatus adds the node's status, its components as a table, to
// status's text. The text is built in memory and written out in one go.
func printStatus(w *strings.Builder, st *node.Status) error {
	fmt.Fprintf(w, "node %s: %s (cgroups %s", st.Sandbox.Name, st.Node.Phase, st.Sandbox.Cgroup.Mode)
	if st.Sandbox.Network != nil {
		fmt.Fprintf(w, ", net %s %s", st.Sandbox.Network.Driver, st.Sandbox.Network.Address)
	}
	fmt.Fprintln(w, ")")
	if st.Sandbox.Cgroup.Reason != "" {
		fmt.Fprintf(w, "  degraded: %s\n", st.Sandbox.Cgroup.Reason)
	}
	if rt := st.Runtime; rt != nil {
		fmt.Fprintf(w, "  runtime: %s %s (%s; runs in %s)\n", rt.Name, rt.Version, rt.Path, rt.Modes())
	}
	if st.Network != nil {
		w.WriteString(st.Network.Summary())
	}
	if d := st.Disk; d != nil {
		fmt.Fprintf(w, "  disk: %s: %d MiB free of %d MiB\n", d.Path, d.Free>>20, d.Total>>20)
		if d.Warning != "" {
			fmt.Fprintf(w, "  WARNING: %s\n", d.Warning)
		}
	}
	if rs := st.Sandbox.Restarts; rs != nil {
		fmt.Fprintf(w, "  sandbox: built again %d time(s) after it died; last %s ago: %s\n", rs.Count, time.Since(rs.LastAt).Round(time.Second), rs.LastDeath)
	}
	if st.Node.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", st.Node.Error)
	}
	var rows strings.Builder
	fmt.Fprintln(&rows, "COMPONENT\tPID\tSTATE\tRESTARTS\tSINCE")
	for _, cs := range st.Node.Components {
		fmt.Fprintf(&rows, "%s\t%d\t%s\t%d\t%s\n", cs.Name, cs.PID, cs.State, cs.Restarts, time.Since(cs.Since).Round(time.Second))
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if _, err := io.WriteString(tw, rows.String()); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printNodes(w, st); err != nil {
		return err
	}
	if len(st.Ports) > 0 {
		fmt.Fprintln(w, "forwarded ports:")
		for _, p := range st.Ports {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	if e := st.Exposure; e != nil && len(e.Exposed) > 0 {
		fmt.Fprintln(w, "exposed for the cluster's Services and pods:")
		for _, x := range e.Exposed {
			fmt.Fprintf(w, "  %s of %s at %s", x.What, x.Obj, netip.AddrPortFrom(x.Spec.HostIP, x.Spec.HostPort))
			if x.Mapped != "" {
				fmt.Fprintf(w, " (%s)", x.Mapped)
			}
			fmt.Fprintln(w)
		}
	}
	if e := st.Exposure; e != nil && len(e.Failed) > 0 {
		fmt.Fprintln(w, "not exposed (tried again every few seconds):")
		for _, f := range e.Failed {
			fmt.Fprintf(w, "  %s of %s at %s: %s\n", f.What, f.Obj, netip.AddrPortFrom(f.Spec.HostIP, f.Spec.HostPort), f.Reason)
		}
	}
	return nil
}

// printNodes adds the cluster's nodes, as the API server reports them, to
// status's text.
func printNodes(w *strings.Builder, st *node.Status) error {
	if st.NodesError != "" {
		fmt.Fprintf(w, "nodes: the API server did not answer: %s\n", st.NodesError)
		return nil
	}
	if len(st.Nodes) == 0 {
		return nil
	}
	fmt.Fprintln(w, "nodes (from the API server):")
	var rows strings.Builder
	fmt.Fprintln(&rows, "  NAME\tSTATUS\tINTERNAL-IP\tEXTERNAL-IP\tVERSION\tAGE\t")
	for _, n := range st.Nodes {
		status := map[string]string{"True": "Ready", "False": "NotReady"}[n.Ready]
		if status == "" {
			status = "Unknown"
		}
		if n.Unschedulable {
			status += ",SchedulingDisabled"
		}
		self := ""
		if n.Self {
			self = "(this node)"
		}
		fmt.Fprintf(&rows, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, status, orNone(n.InternalIP), orNone(n.ExternalIP), n.Version, time.Since(n.Created).Round(time.Second), self)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	if _, err := io.WriteString(tw, rows.String()); err != nil {
		return err
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func logsCommand() *cobra.Command {
	var cf configFlags
	var follow bool
	c := &cobra.Command{
		Use:   "logs COMPONENT",
		Short: "Show a component's log (containerd, etcd, kube-apiserver, kubelet, ..., supervisor)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := cf.node()
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
	cf.add(c.Flags(), cluster.NodeFlags)
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what is appended")
	return c
}

func kubeconfigCommand() *cobra.Command {
	var cf configFlags
	c := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print a kubeconfig for the node's cluster (server https://127.0.0.1:6443)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := cf.node()
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
	cf.add(c.Flags(), cluster.NodeFlags)
	return c
}
