package main

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/usernode/usernode/bench/internal/host"
)

func total(m map[string]mem, in func(string) bool, f func(mem) float64) float64 {
	t := 0.0
	for g, v := range m {
		if in(g) {
			t += f(v)
		}
	}
	return t
}

func rssOf(m mem) float64  { return m.rss }
func hwmOf(m mem) float64  { return m.hwm }
func pssOf(m mem) float64  { return m.pss }
func anonOf(m mem) float64 { return m.anon }

// launcher is what starts and holds the node: usernode's own four
// processes, or RootlessKit's two and the script.
func launcher(g string) bool { return ownGroups[g] || launcherGroups[g] }

// runtimeGroup is the CRI runtime's part of a node: the daemon and what
// it keeps per pod (containerd's shims, CRI-O's conmons).
func runtimeGroup(g string) bool {
	return g == "containerd" || g == "crio" || g == "containerd-shim (1 pod)" || g == "conmon (1 pod)"
}

// isUsernode says whether a side's label is one of usernode's.
func isUsernode(label string) bool { return strings.HasPrefix(label, "usernode") }

type row struct {
	label string
	f     func(side string, r result) (float64, bool)
	unit  string // format
}

// report writes the results as Markdown tables to w. The text is built in
// memory and written in one go, so a failed write is the one error.
func report(w io.Writer, res map[string][]result, sides []*side, others int, load0 string, elapsed time.Duration) error {
	var out strings.Builder
	kinds := []string{"cold", "warm"}
	med := func(key string, f func(side string, r result) (float64, bool)) (float64, int) {
		var v []float64
		side := strings.TrimSuffix(strings.TrimSuffix(key, " cold"), " warm")
		for _, r := range res[key] {
			if x, ok := f(side, r); ok {
				v = append(v, x)
			}
		}
		return host.Median(v), len(v)
	}
	sec := func(get func(r result) float64) func(string, result) (float64, bool) {
		return func(_ string, r result) (float64, bool) { return get(r), true }
	}
	memRow := func(group string, f func(mem) float64) func(string, result) (float64, bool) {
		return func(_ string, r result) (float64, bool) {
			m, ok := r.mem[group]
			return f(m), ok
		}
	}
	rows := []row{
		{"node Ready (s)", sec(func(r result) float64 { return r.ready }), "%.1f"},
		{"first pod accepted by the API (s)", sec(func(r result) float64 { return r.created }), "%.1f"},
		{"first pod Running (s)", sec(func(r result) float64 { return r.pod }), "%.1f"},
		{"`usernode up -d` returned (s)", func(s string, r result) (float64, bool) { return r.returned, isUsernode(s) }, "%.1f"},
		{"config + PKI written by gen, in the times above (s)", func(s string, r result) (float64, bool) { return r.gen, !isUsernode(s) && r.gen > 0 }, "%.2f"},
		{"stop: `down` / SIGTERM to rootlesskit (s)", sec(func(r result) float64 { return r.stop }), "%.1f"},
		{"**RSS, steady state (MB)**", nil, ""},
		{"the CRI runtime (containerd, or crio + conmon), shims and monitors included", func(_ string, r result) (float64, bool) {
			return total(r.mem, runtimeGroup, rssOf), true
		}, "%.1f"},
		{"launcher: usernode's 4 processes / rootlesskit ×2 + sh", func(_ string, r result) (float64, bool) {
			return total(r.mem, launcher, rssOf), true
		}, "%.1f"},
	}
	for _, g := range groups {
		if g == "other" {
			continue
		}
		label := "  " + g
		if strings.HasPrefix(g, "usernode") || launcherGroups[g] {
			label = "  · " + g
		}
		rows = append(rows, row{label, memRow(g, rssOf), "%.1f"})
	}
	rows = append(rows,
		row{"other (transient helpers)", memRow("other", rssOf), "%.1f"},
		row{"node total (every process)", func(_ string, r result) (float64, bool) {
			return total(r.mem, func(string) bool { return true }, rssOf), true
		}, "%.0f"},
		row{"Kubernetes + containerd (no launcher, no slirp4netns, no pod)", func(_ string, r result) (float64, bool) {
			return total(r.mem, func(g string) bool {
				return !launcher(g) && g != "slirp4netns" && !podGroup(g) && g != "other"
			}, rssOf), true
		}, "%.0f"},
		row{"**launcher, other measures (MB)**", nil, ""},
		row{"launcher PSS (shared pages split)", func(_ string, r result) (float64, bool) { return total(r.mem, launcher, pssOf), true }, "%.1f"},
		row{"launcher anonymous (RssAnon: heap, stacks)", func(_ string, r result) (float64, bool) { return total(r.mem, launcher, anonOf), true }, "%.1f"},
		row{"launcher peak (sum of VmHWM)", func(_ string, r result) (float64, bool) { return total(r.mem, launcher, hwmOf), true }, "%.1f"},
		row{"launcher + slirp4netns RSS", func(_ string, r result) (float64, bool) {
			return total(r.mem, func(g string) bool { return launcher(g) || g == "slirp4netns" }, rssOf), true
		}, "%.1f"},
		row{"node total PSS", func(_ string, r result) (float64, bool) {
			return total(r.mem, func(string) bool { return true }, pssOf), true
		}, "%.0f"},
		// PSS splits pages shared between processes (the same binary's
		// text, the pause program's one page across every pod) among
		// them, so unlike RSS it adds up across processes.
		row{"**PSS, steady state (MB; smaps_rollup)**", nil, ""},
	)
	for _, g := range groups {
		rows = append(rows, row{"  " + g, memRow(g, pssOf), "%.2f"})
	}
	perPod := func(in func(string) bool) func(string, result) (float64, bool) {
		return func(_ string, r result) (float64, bool) {
			return total(r.perPod, in, pssOf), r.perPod != nil
		}
	}
	rows = append(rows,
		row{fmt.Sprintf("**PSS each pod adds (MB): %d more busybox pods at once, warm starts; (after − before) / %d**", *pods, *pods), nil, ""},
		row{"  pod: pause (usernode's per-pod cost)", perPod(func(g string) bool { return g == "pod: pause" }), "%.3f"},
		row{"  pod: busybox sleep", perPod(func(g string) bool { return g == "pod: busybox" }), "%.3f"},
		row{"  containerd-shim / conmon", perPod(func(g string) bool { return g == "containerd-shim (1 pod)" || g == "conmon (1 pod)" }), "%.2f"},
		row{"  usernode's own 4 processes / rootlesskit + sh", perPod(launcher), "%.3f"},
		row{"  kubelet, containerd / crio and the rest of the node", perPod(func(g string) bool {
			return !podGroup(g) && !launcher(g) && g != "containerd-shim (1 pod)" && g != "conmon (1 pod)"
		}), "%.2f"},
		row{"  node total", perPod(func(string) bool { return true }), "%.2f"},
	)

	n := 0
	for _, v := range res {
		if len(v) > n {
			n = len(v)
		}
	}
	fmt.Fprintf(&out, "`usernode up` (one side per CRI runtime) vs the hard way: %d rounds, each a cold then a warm start of every side, interleaved (each round starts with the next side); medians. First pod: busybox, created once the node is Ready, timed from the start. Memory read %s after the pod is Running.\n", *rounds, settle.String())
	fmt.Fprintf(&out, "%s. Kernel %s, %d CPUs; %s; %s; %s; %s; %s.\n\n", version(filepath.Join(work, "usernode"), "version"), host.Kernel(), host.NumCPU(),
		version(filepath.Join(*binDir, "kubelet"), "--version"), version("containerd", "--version"), version(filepath.Join(*binDir, "crio"), "--version"),
		version("rootlesskit", "--version"), version("slirp4netns", "--version"))

	// Ratios: each usernode side over the hard way, when both ran.
	hwIdx := -1
	for i, s := range sides {
		if !s.usernode {
			hwIdx = i
		}
	}
	var ratioOf []int
	for i, s := range sides {
		if s.usernode && hwIdx >= 0 {
			ratioOf = append(ratioOf, i)
		}
	}
	hdr := "| |"
	sep := "|---|"
	for _, k := range kinds {
		for _, s := range sides {
			hdr += " " + s.label + " " + k + " |"
			sep += "---|"
		}
		for _, i := range ratioOf {
			hdr += " " + sides[i].label + " / hard way |"
			sep += "---|"
		}
	}
	fmt.Fprintln(&out, hdr)
	fmt.Fprintln(&out, sep)
	for _, rw := range rows {
		line := "| " + rw.label + " |"
		if rw.f == nil {
			for range kinds {
				for range len(sides) + len(ratioOf) {
					line += " |"
				}
			}
			fmt.Fprintln(&out, line)
			continue
		}
		for _, k := range kinds {
			var vals []float64
			for _, s := range sides {
				v, cnt := med(s.label+" "+k, rw.f)
				if cnt == 0 {
					line += " – |"
					vals = append(vals, -1)
					continue
				}
				line += " " + fmt.Sprintf(rw.unit, v) + " |"
				vals = append(vals, v)
			}
			for _, i := range ratioOf {
				if vals[i] > 0 && vals[hwIdx] > 0 {
					line += fmt.Sprintf(" %.2f× |", vals[i]/vals[hwIdx])
				} else {
					line += " – |"
				}
			}
		}
		fmt.Fprintln(&out, line)
	}
	fmt.Fprintln(&out)
	for _, k := range kinds {
		for _, s := range sides {
			fmt.Fprintf(&out, "- %s %s: %d of %d starts measured\n", s.label, k, len(res[s.label+" "+k]), *rounds)
		}
	}

	// Where the time goes.
	for _, s := range sides {
		keys := map[string]bool{}
		for _, k := range kinds {
			for _, r := range res[s.label+" "+k] {
				for p := range r.phases {
					keys[p] = true
				}
			}
		}
		if len(keys) == 0 {
			continue
		}
		var order []string
		if s.usernode {
			fmt.Fprintf(&out, "\n### %s: the phase lines (durations, as `up` prints them; medians)\n\n", s.label)
			order = []string{"sandbox", "network", "ready", "containerd", "crio", "image-import-0", "image-import-1", "etcd", "kube-apiserver",
				"bootstrap-rbac", "coredns-objects", "coredns", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "node ready", "Ready after `up` (its own line)"}
		} else {
			fmt.Fprintf(&out, "\n### The hard way's steps (seconds from the start; medians)\n\n")
			order = []string{"namespace", "containerd", "images", "kube-apiserver", "bootstrap-rbac", "coredns-objects", "started"}
		}
		for k := range keys {
			found := false
			for _, o := range order {
				found = found || o == k
			}
			if !found {
				order = append(order, k)
			}
		}
		fmt.Fprintln(&out, "| | cold (s) | warm (s) |")
		fmt.Fprintln(&out, "|---|---|---|")
		for _, p := range order {
			if !keys[p] {
				continue
			}
			label := p
			switch p {
			case "node ready":
				label = "node ready (all components, after its supervisor started)"
			case "ready":
				label = "ready (sandbox up)"
			}
			line := "| " + label + " |"
			for _, k := range kinds {
				v, cnt := med(s.label+" "+k, func(_ string, r result) (float64, bool) { x, ok := r.phases[p]; return x, ok })
				if cnt == 0 {
					line += " – |"
				} else {
					line += fmt.Sprintf(" %.2f |", v)
				}
			}
			fmt.Fprintln(&out, line)
		}
	}

	var seen []string
	set := map[string]bool{}
	for _, rs := range res {
		for _, r := range rs {
			for _, o := range r.others {
				if !set[o] {
					set[o] = true
					seen = append(seen, o)
				}
			}
		}
	}
	sort.Strings(seen)
	fmt.Fprintln(&out)
	if len(seen) > 0 {
		fmt.Fprintf(&out, "Other processes seen when memory was read: %s.\n", strings.Join(seen, ", "))
	}
	fmt.Fprintf(&out, "Before the run: %d processes of %s already running (other nodes or tests on this host), load %s; after: load %s.\n", others, acct.name, load0, loadavg())
	fmt.Fprintf(&out, "Total time %s.\n", elapsed.Round(time.Second))
	_, err := io.WriteString(w, out.String())
	return err
}

func version(bin string, arg string) string {
	out, err := exec.Command(bin, arg).CombinedOutput()
	if err != nil {
		return filepath.Base(bin) + " ?"
	}
	l := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	return strings.TrimPrefix(l, "github.com/containerd/containerd ")
}
