package main

// kubectl, run by root inside host A's namespace: the only place the
// control plane's API (forwarded to A's 127.0.0.1 and 198.51.100.1) is.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const (
	busybox  = "docker.io/library/busybox:usernode" // imported by every node; there is no registry
	toolPath = "/tmp/multinode"                     // the tool inside a pod
)

type kube struct {
	host       netHost
	bin        string // kubectl
	kubeconfig string
}

func (k *kube) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + k.host.path(), "--", k.bin, "--kubeconfig", k.kubeconfig}, args...)...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C is the harness's to handle
	c.WaitDelay = 5 * time.Second
	return c
}

// run runs kubectl with stdin (nil: none) and returns its stdout.
func (k *kube) run(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c := k.cmd(ctx, append([]string{"--request-timeout=60s"}, args...)...)
	c.Stdin = stdin
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// poll calls f every half second until it says done, f errs for good,
// or timeout passes; last is what f saw, for the error.
func poll(ctx context.Context, what string, timeout time.Duration, f func() (done bool, last string)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, last := f()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s; last: %s", what, timeout, strings.TrimSpace(last))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// startPod runs a busybox pod pinned to node that waits for the tool to
// be copied in and then serves with it, so the server lives as long as
// the pod. The API refuses pods until the namespace's default
// ServiceAccount exists, seconds after a cold control plane is Ready:
// retried until then.
func (k *kube) startPod(ctx context.Context, name, node string) error {
	overrides := fmt.Sprintf(`{"spec":{"nodeName":%q,"terminationGracePeriodSeconds":1}}`, node)
	script := fmt.Sprintf("while [ ! -x %s ]; do sleep 1; done; exec %s serve", toolPath, toolPath)
	return poll(ctx, "pod "+name+" accepted by the API", 2*time.Minute, func() (bool, string) {
		out, err := k.run(ctx, nil, "run", name, "--image="+busybox, "--image-pull-policy=Never", "--restart=Never",
			"--overrides="+overrides, "--", "sh", "-c", script)
		if err != nil {
			// A try that timed out on our side may still have made it.
			return strings.Contains(err.Error(), "already exists"), err.Error()
		}
		return true, out
	})
}

// podIP waits for the pod to be Running and returns its IP.
func (k *kube) podIP(ctx context.Context, name string) (string, error) {
	var ip string
	err := poll(ctx, "pod "+name+" Running", 3*time.Minute, func() (bool, string) {
		out, err := k.run(ctx, nil, "get", "pod", name, "-o", "jsonpath={.status.phase} {.status.podIP}")
		if f := strings.Fields(out); err == nil && len(f) == 2 && f[0] == "Running" {
			ip = f[1]
			return true, out
		}
		if err != nil {
			return false, err.Error()
		}
		return false, out
	})
	return ip, err
}

// install copies the tool into the pod through exec's stdin. Not `kubectl
// cp`: it needs tar in the container, and the busybox image links only a
// few applets (internal/images), tar not among them. Written aside and
// renamed, so the pod's loop never starts a half-written binary.
func (k *kube) install(ctx context.Context, pod, tool string) error {
	f, err := os.Open(tool)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = k.run(ctx, f, "exec", "-i", pod, "--", "sh", "-c",
		fmt.Sprintf("cat > %[1]s.part && busybox chmod 755 %[1]s.part && busybox mv %[1]s.part %[1]s", toolPath))
	return err
}

// deletePod deletes the pod and waits until it is gone.
func (k *kube) deletePod(ctx context.Context, name string) error {
	_, err := k.run(ctx, nil, "delete", "pod", name, "--ignore-not-found", "--wait=true", "--timeout=90s")
	return err
}

// nodeDoc is what the Ready watch reads of a Node.
type nodeDoc struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Status struct {
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func (d nodeDoc) ready() bool {
	for _, c := range d.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// readyWatch is `kubectl get nodes --watch` on host A: the moment the
// control plane hears that a node is Ready, from an event rather than a
// poll, which would cost the busy machine a kubectl every few hundred ms.
type readyWatch struct {
	ready  chan time.Time // the first time name was seen Ready
	cancel context.CancelFunc
	done   chan error
}

// watchReady starts the watch and returns once it has delivered the
// current list (the control plane's own node is always in it), so that
// nothing after the return can be missed.
func (k *kube) watchReady(ctx context.Context, name string) (*readyWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	c := k.cmd(ctx, "--request-timeout=0", "get", "nodes", "--watch", "-o", "json")
	out, err := c.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	var errb bytes.Buffer
	c.Stderr = &errb
	if err := c.Start(); err != nil {
		cancel()
		return nil, err
	}
	w := &readyWatch{ready: make(chan time.Time, 1), cancel: cancel, done: make(chan error, 1)}
	listed := make(chan struct{})
	go func() {
		dec := json.NewDecoder(out)
		first := true
		for {
			var d nodeDoc
			if err := dec.Decode(&d); err != nil {
				_ = c.Wait() // the watch is over either way; errb says why
				w.done <- fmt.Errorf("kubectl get nodes --watch: %v: %s", err, strings.TrimSpace(errb.String()))
				return
			}
			if first {
				close(listed)
				first = false
			}
			if d.Metadata.Name == name && d.ready() {
				select {
				case w.ready <- time.Now():
				default: // only the first Ready counts
				}
			}
		}
	}()
	select {
	case <-listed:
		return w, nil
	case err := <-w.done:
		cancel()
		return nil, err
	case <-time.After(time.Minute):
		cancel()
		return nil, errors.New("kubectl get nodes --watch listed nothing within 1 min")
	}
}

func (w *readyWatch) stop() { w.cancel() }
