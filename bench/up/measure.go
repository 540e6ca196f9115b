package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/usernode/usernode/pkg/node"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// ---- processes and their memory ----

type proc struct {
	pid, ppid int
	exe       string // basename of /proc/PID/exe
	argv0     string
	args      []string // the rest of the command line
}

// tree is root and all its descendants, from /proc.
func tree(root int) []proc {
	all := map[int]proc{}
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		p := proc{pid: pid, ppid: ppid}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
			p.exe = filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
		}
		if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			f := strings.Split(strings.TrimSuffix(string(cl), "\x00"), "\x00")
			p.argv0, p.args = f[0], f[1:]
		}
		// `make k8s` links the daemons' names to one executable: the
		// name a daemon was run as says which it is.
		if p.exe == "kube-node" {
			p.exe = filepath.Base(p.argv0)
		}
		all[pid] = p
		kids[ppid] = append(kids[ppid], pid)
	}
	var out []proc
	var walk func(int)
	walk = func(pid int) {
		p, ok := all[pid]
		if !ok {
			return
		}
		out = append(out, p)
		for _, k := range kids[pid] {
			walk(k)
		}
	}
	walk(root)
	return out
}

type mem struct{ rss, hwm, pss, anon float64 } // MB

func memOf(pid int) (mem, bool) {
	var m mem
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, false
	}
	kb := func(line string) float64 {
		v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
		return v / 1024
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "VmRSS:"):
			m.rss = kb(l)
		case strings.HasPrefix(l, "VmHWM:"):
			m.hwm = kb(l)
		case strings.HasPrefix(l, "RssAnon:"):
			m.anon = kb(l)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "Pss:") {
				m.pss = kb(l)
			}
		}
	}
	return m, true
}

// Process groups, in table order. usernode's own four processes are all
// the usernode binary. Each pod's pause process is usernode's too (the
// image it builds: internal/pause), counted apart from the pod's
// containers.
var groups = []string{
	"usernode supervisor", "usernode agent", "usernode init", "usernode-node",
	"rootlesskit (parent + child)", "hardway.sh (sh)",
	"slirp4netns",
	"containerd", "crio", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns",
	"containerd-shim (1 pod)", "conmon (1 pod)", "pod: pause", "pod: busybox",
	"other",
}

var ownGroups = map[string]bool{"usernode supervisor": true, "usernode agent": true, "usernode init": true, "usernode-node": true}
var launcherGroups = map[string]bool{"rootlesskit (parent + child)": true, "hardway.sh (sh)": true}

// podGroup: the processes of pods, as opposed to the node's.
func podGroup(g string) bool { return g == "pod: pause" || g == "pod: busybox" }

func classify(p proc, underShim bool) string {
	if underShim {
		// usernode's pause image runs /pause; where it has no program for
		// the architecture and usernode is not static, busybox's sleep.
		if p.argv0 == "/pause" || p.argv0 == "/bin/sleep" && len(p.args) == 1 && p.args[0] == "infinity" {
			return "pod: pause"
		}
		return "pod: busybox"
	}
	switch p.argv0 {
	case "usernode-sandbox-agent":
		return "usernode agent"
	case "usernode-sandbox-init":
		return "usernode init"
	case "usernode-node":
		return "usernode-node"
	}
	switch p.exe {
	case "usernode":
		return "usernode supervisor"
	case "rootlesskit":
		return "rootlesskit (parent + child)"
	case "dash", "sh", "bash":
		return "hardway.sh (sh)"
	case "slirp4netns", "containerd", "crio", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns":
		return p.exe
	case "containerd-shim-runc-v2":
		return "containerd-shim (1 pod)"
	case "conmon":
		return "conmon (1 pod)"
	}
	return "other"
}

// sample sums the memory of every process under root by group.
func sample(root int) (map[string]mem, []string) {
	ps := tree(root)
	shim := map[int]bool{}
	out := map[string]mem{}
	var others []string
	for _, p := range ps {
		// A pod's processes are a shim's (containerd) or conmon's (CRI-O)
		// children.
		under := shim[p.ppid]
		if under || p.exe == "containerd-shim-runc-v2" || p.exe == "conmon" {
			shim[p.pid] = true
		}
		g := classify(p, under)
		m, ok := memOf(p.pid)
		if !ok {
			continue
		}
		if g == "other" {
			others = append(others, p.exe)
		}
		t := out[g]
		t.rss += m.rss
		t.hwm += m.hwm
		t.pss += m.pss
		t.anon += m.anon
		out[g] = t
	}
	return out, others
}

// ---- the API ----

func client(kubeconfig string) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.Timeout = 2 * time.Second
	rc.QPS, rc.Burst = 100, 100
	return kubernetes.NewForConfig(rc)
}

// waitReady polls until the node reports Ready with a heartbeat from this
// start: after a warm restart the Node object still says Ready from the
// previous run (the node controller marks it Unknown only after 40 s).
// The heartbeat has second resolution, hence the truncation.
func waitReady(ctx context.Context, kubeconfig, name string, since time.Time, failed <-chan error) (*kubernetes.Clientset, error) {
	since = since.Truncate(time.Second)
	var cs *kubernetes.Clientset
	last := "no kubeconfig yet"
	for {
		if cs == nil {
			if _, err := os.Stat(kubeconfig); err == nil {
				var err error
				if cs, err = client(kubeconfig); err != nil {
					return nil, err
				}
			}
		}
		if cs != nil {
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
			} else {
				for _, c := range n.Status.Conditions {
					if c.Type != corev1.NodeReady {
						continue
					}
					if c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(since) {
						return cs, nil
					}
					last = fmt.Sprintf("Ready=%s (%s) heartbeat %s", c.Status, c.Reason, c.LastHeartbeatTime.Format(time.TimeOnly))
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s not Ready: %w (last: %s)", name, ctx.Err(), last)
		case err := <-failed:
			return nil, fmt.Errorf("node %s not Ready, the start failed: %v (last: %s)", name, err, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func podSpec(name string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name: "bb", Image: node.BusyboxRef, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "3600"},
			}},
		},
	}
}

// runPod creates the pod (retrying while the API refuses it, e.g. before
// the default ServiceAccount exists) and waits until it is Running. It
// returns when the API accepted the pod, and why it refused it before.
func runPod(ctx context.Context, cs *kubernetes.Clientset, name string) (created time.Time, refused string, err error) {
	pods := cs.CoreV1().Pods("default")
	last := ""
	for {
		_, err := pods.Create(ctx, podSpec(name), metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			created, refused = time.Now(), last
			break
		}
		last = err.Error()
		select {
		case <-ctx.Done():
			return created, last, fmt.Errorf("creating pod %s: %w (last: %s)", name, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			if p.Status.Phase == corev1.PodRunning {
				return created, refused, nil
			}
			last = string(p.Status.Phase)
			for _, c := range p.Status.ContainerStatuses {
				if c.State.Waiting != nil {
					last += " " + c.State.Waiting.Reason + ": " + c.State.Waiting.Message
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return created, refused, fmt.Errorf("pod %s not Running: %w (last: %s)", name, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// deletePod deletes the pod (gracefully: the kubelet kills it and then
// confirms) and waits until it is gone, so that the next (warm) start has
// no pod to bring back.
func deletePod(ctx context.Context, cs *kubernetes.Clientset, name string) error {
	pods := cs.CoreV1().Pods("default")
	if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	for {
		if _, err := pods.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s not gone: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// morePods measures what a pod costs: it creates n more pods like the
// first at once, waits until all are Running, waits settle, reads the
// memory under root again and deletes them (waiting until they are gone,
// so the next start has none to bring back). It returns what each pod
// added, by group: (after - before) / n.
func morePods(ctx context.Context, cs *kubernetes.Clientset, batch string, n, root int, before map[string]mem) (map[string]mem, error) {
	pods := cs.CoreV1().Pods("default")
	sel := metav1.ListOptions{LabelSelector: "benchup-batch=" + batch}
	defer func() {
		// Best effort here; a pod left behind makes the next start's
		// figures wrong, which the purge at the round's start prevents.
		_ = pods.DeleteCollection(context.Background(), metav1.DeleteOptions{}, sel)
		for i := 0; i < 600; i++ {
			if l, err := pods.List(context.Background(), sel); err == nil && len(l.Items) == 0 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	for i := 0; i < n; i++ {
		p := podSpec(fmt.Sprintf("%s-%d", batch, i))
		p.Labels = map[string]string{"benchup-batch": batch}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("pod %d of %d: %w", i+1, n, err)
		}
	}
	last := ""
	for {
		l, err := pods.List(ctx, sel)
		running := 0
		if err == nil {
			for _, p := range l.Items {
				if p.Status.Phase == corev1.PodRunning {
					running++
				}
			}
			if running == n {
				break
			}
			last = fmt.Sprintf("%d of %d Running", running, n)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d pods not Running: %w (last: %s)", n, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
	select {
	case <-time.After(*settle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	after, _ := sample(root)
	per := map[string]mem{}
	for _, m := range []map[string]mem{before, after} {
		for g := range m {
			a, b := after[g], before[g]
			per[g] = mem{rss: (a.rss - b.rss) / float64(n), hwm: (a.hwm - b.hwm) / float64(n),
				pss: (a.pss - b.pss) / float64(n), anon: (a.anon - b.anon) / float64(n)}
		}
	}
	return per, nil
}
