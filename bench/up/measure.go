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
			p.argv0 = string(bytes.SplitN(cl, []byte{0}, 2)[0])
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
// the usernode binary; so is the pause process of each pod, which counts
// with the pods.
var groups = []string{
	"usernode supervisor", "usernode agent", "usernode init", "usernode-node",
	"rootlesskit (parent + child)", "hardway.sh (sh)",
	"slirp4netns",
	"containerd", "crio", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns",
	"containerd-shim (1 pod)", "conmon (1 pod)", "pod: pause + busybox",
	"other",
}

var ownGroups = map[string]bool{"usernode supervisor": true, "usernode agent": true, "usernode init": true, "usernode-node": true}
var launcherGroups = map[string]bool{"rootlesskit (parent + child)": true, "hardway.sh (sh)": true}

func classify(p proc, underShim bool) string {
	if underShim {
		return "pod: pause + busybox"
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
		under := shim[p.ppid]
		if under || p.exe == "containerd-shim-runc-v2" {
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
