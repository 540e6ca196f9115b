package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/kubelet"
	"github.com/usernode/usernode/pkg/node/pki"
	"github.com/usernode/usernode/pkg/sandbox"
)

// ClusterNode is one of the cluster's nodes as the API server reports it:
// `usernode status` lists them.
type ClusterNode struct {
	Name string `json:"name"`
	// Self marks the node this host runs.
	Self bool `json:"self,omitempty"`
	// Ready is the Ready condition's status: True, False or Unknown (the
	// kubelet stopped reporting).
	Ready         string    `json:"ready"`
	Unschedulable bool      `json:"unschedulable,omitempty"`
	InternalIP    string    `json:"internalIP,omitempty"`
	ExternalIP    string    `json:"externalIP,omitempty"`
	Version       string    `json:"version,omitempty"`
	Created       time.Time `json:"created"`
}

// DrainedAnnotation marks a node `usernode down --drain` cordoned: its
// next `up` makes it schedulable again. A node cordoned by hand stays so.
const DrainedAnnotation = "usernode.io/drained"

// runningCluster is the model a running node was started with, and a
// client of its cluster with the host side's identity.
func runningCluster(c sandbox.Config) (*cluster.Cluster, *apiClient, error) {
	if _, err := sandbox.Running(c.RuntimeDir); err != nil {
		return nil, nil, err
	}
	p := PathsOf(c)
	b, err := os.ReadFile(p.spec())
	if err != nil {
		return nil, nil, fmt.Errorf("node %q is starting (no %s yet): try again once `usernode status` says ready", c.Name, p.spec())
	}
	var spec Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p.spec(), err)
	}
	cs, err := clusterClient(p, spec.Cluster)
	return spec.Cluster, cs, err
}

// clusterClient is how the host side reads the cluster: as its admin on a
// control plane, with the kubelet's own identity on a worker, which has
// no other (the Node authorizer limits it to what its node may do).
func clusterClient(p Paths, cl *cluster.Cluster) (*apiClient, error) {
	ps := pki.Paths(p.PKI())
	if cl.Self().Role != cluster.Worker {
		return newAPIClient(cl.API.URL(), ps)
	}
	cert := p.inside(kubelet.ClientCertCurrent)
	return newAPIClientUnder(p.State, cl.API.URL(), ps.CA.Cert, cert, cert)
}

// listNodes is the cluster's nodes, or, for a worker (whose identity may
// read only its own Node), its node.
func listNodes(ctx context.Context, cs *apiClient, self string) ([]ClusterNode, error) {
	var list corev1.NodeList
	err := cs.get(ctx, "/api/v1/nodes", &list)
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusForbidden {
		list.Items = make([]corev1.Node, 1)
		err = cs.get(ctx, "/api/v1/nodes/"+self, &list.Items[0])
	}
	if err != nil {
		return nil, err
	}
	out := make([]ClusterNode, 0, len(list.Items))
	for _, n := range list.Items {
		ni := ClusterNode{Name: n.Name, Self: n.Name == self, Ready: string(corev1.ConditionUnknown), Unschedulable: n.Spec.Unschedulable,
			Version: n.Status.NodeInfo.KubeletVersion, Created: n.CreationTimestamp.Time}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ni.Ready = string(c.Status)
			}
		}
		for _, a := range n.Status.Addresses {
			switch a.Type {
			case corev1.NodeInternalIP:
				ni.InternalIP = a.Address
			case corev1.NodeExternalIP:
				ni.ExternalIP = a.Address
			}
		}
		out = append(out, ni)
	}
	return out, nil
}

// Drain cordons the running node c names and evicts its pods, as `kubectl
// drain --ignore-daemonsets` does, waiting up to timeout for them to go:
// their controllers start them again on the cluster's other nodes. Pods
// that a PodDisruptionBudget protects are tried again until then. The
// node is marked (DrainedAnnotation) so that its next `up` uncordons it.
func Drain(ctx context.Context, c sandbox.Config, timeout time.Duration, l *log.Logger) error {
	cl, cs, err := runningCluster(c)
	if err != nil {
		return err
	}
	name := cl.Self().Name
	start := time.Now()
	// As kubectl drain without --force: a pod no controller manages
	// would be gone for good, where a plain `down` keeps it for the
	// node's next `up`.
	pods, err := drainable(ctx, cs, name)
	if err != nil {
		return err
	}
	var bare []string
	for _, p := range pods {
		if metav1.GetControllerOf(&p) == nil {
			bare = append(bare, p.Namespace+"/"+p.Name)
		}
	}
	if len(bare) > 0 {
		return fmt.Errorf("node %s runs pods no controller manages, which a drain would delete for good: %s; delete them first, or `usernode down` without --drain keeps them for the node's next up", name, strings.Join(bare, ", "))
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{DrainedAnnotation: "true"}}, "spec": map[string]any{"unschedulable": true}}
	if err := cs.send(ctx, http.MethodPatch, "/api/v1/nodes/"+name, patch, nil); err != nil {
		return fmt.Errorf("cordoning node %s: %w", name, err)
	}
	l.Infof("node %s cordoned; evicting its pods", name)
	deadline := time.Now().Add(timeout)
	for {
		left, err := drainable(ctx, cs, name)
		if err != nil {
			return err
		}
		if len(left) == 0 {
			l.Infof("node %s drained (%.1fs)", name, time.Since(start).Seconds())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s still runs %d pods after %s (first: %s/%s); it stays cordoned and running: `usernode down` without --drain stops it anyway, `kubectl uncordon %s` undoes the cordon", name, len(left), timeout, left[0].Namespace, left[0].Name, name)
		}
		for _, p := range left {
			if p.DeletionTimestamp != nil {
				continue // evicted, going
			}
			ev := policyv1.Eviction{TypeMeta: metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"}, ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}}
			err := cs.send(ctx, http.MethodPost, "/api/v1/namespaces/"+p.Namespace+"/pods/"+p.Name+"/eviction", ev, nil)
			var se *statusError
			switch {
			case err == nil:
				l.V(1).Infof("evicted %s/%s", p.Namespace, p.Name)
			case errors.As(err, &se) && (se.code == http.StatusTooManyRequests || se.code == http.StatusNotFound):
				// A PodDisruptionBudget says not now; or gone already.
			default:
				return fmt.Errorf("evicting %s/%s: %w", p.Namespace, p.Name, err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// drainable are the node's pods that a drain moves: not a DaemonSet's
// (it would start them here again), not a static pod's mirror, not
// finished.
func drainable(ctx context.Context, cs *apiClient, node string) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := cs.get(ctx, "/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName="+node), &pods); err != nil {
		return nil, fmt.Errorf("listing node %s's pods: %w", node, err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.Kind == "DaemonSet" {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// uncordonDrained makes a node that `down --drain` cordoned schedulable
// again, once it is back.
func uncordonDrained(ctx context.Context, cs *apiClient, name string, l *log.Logger) error {
	var n corev1.Node
	if err := cs.get(ctx, "/api/v1/nodes/"+name, &n); err != nil {
		return err
	}
	if n.Annotations[DrainedAnnotation] == "" {
		return nil
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{DrainedAnnotation: nil}}, "spec": map[string]any{"unschedulable": false}}
	if err := cs.send(ctx, http.MethodPatch, "/api/v1/nodes/"+name, patch, nil); err != nil {
		return fmt.Errorf("uncordoning node %s, which `down --drain` cordoned: %w", name, err)
	}
	l.Infof("node %s schedulable again (`down --drain` had cordoned it)", name)
	return nil
}
