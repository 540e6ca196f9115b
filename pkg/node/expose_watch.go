package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
)

// Exposure is what `usernode status` shows of the ports usernode exposes
// for the cluster's objects: those open, and those it could not open,
// with why (it tries again every few seconds).
type Exposure struct {
	Exposed []exposure   `json:"exposed,omitempty"`
	Failed  []failedPort `json:"failed,omitempty"`
}

type failedPort struct {
	exposure
	Reason string `json:"reason"`
}

// exposer keeps the forwarder's ports equal to what the objects ask for.
type exposer struct {
	c      *apiClient
	fwd    *api.Client
	l      *log.Logger
	o      exposeOpts
	status string // where Exposure is written for `usernode status`
	// lb: this node sets LoadBalancer Services' status (the control
	// plane; a worker's identity may not), with ingress as their address.
	lb      bool
	ingress netip.Addr

	mu     sync.Mutex
	svcs   map[string]service
	pods   map[string]pod
	have   map[port.Spec]exposure
	failed map[port.Spec]string
	// told is the last Event per object and port, so each problem (and
	// its end) is told once.
	told map[string]string
}

// retryEvery is how often a port that could not be opened is tried
// again: the clash ends within seconds of the other side letting go.
const retryEvery = 2 * time.Second

func (x *exposer) run(ctx context.Context) error {
	x.have, x.failed, x.told = map[port.Spec]exposure{}, map[port.Spec]string{}, map[string]string{}
	go x.informer(ctx, "/api/v1/services", func(m map[string]json.RawMessage) {
		svcs := decodeAll[service](m)
		x.mu.Lock()
		x.svcs = svcs
		x.mu.Unlock()
		x.reconcile(ctx)
	})
	go x.informer(ctx, "/api/v1/pods?fieldSelector="+url.QueryEscape("spec.nodeName="+x.o.Node), func(m map[string]json.RawMessage) {
		pods := decodeAll[pod](m)
		x.mu.Lock()
		x.pods = pods
		x.mu.Unlock()
		x.reconcile(ctx)
	})
	for ctx.Err() == nil {
		sleepCtx(ctx, retryEvery)
		x.mu.Lock()
		n := len(x.failed)
		x.mu.Unlock()
		if n > 0 {
			x.reconcile(ctx)
		}
	}
	return nil
}

func (x *exposer) reconcile(ctx context.Context) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.svcs == nil || x.pods == nil {
		return // not both listed yet: nothing is closed on half a view
	}
	want := desired(x.svcs, x.pods, x.o)
	wanted := map[port.Spec]bool{}
	for _, e := range want {
		wanted[e.Spec] = true
	}
	for s, e := range x.have {
		if !wanted[s] && x.fwd.Remove(ctx, s) == nil {
			delete(x.have, s)
			x.l.Infof("%s of %s closed on the host (%s)", e.What, e.Obj, s)
		}
	}
	for s := range x.failed {
		if !wanted[s] {
			delete(x.failed, s)
		}
	}
	taken := map[port.Spec]bool{}
	for _, e := range want {
		if _, ok := x.have[e.Spec]; ok || taken[e.Spec] {
			if !ok {
				x.fail(ctx, e, fmt.Sprintf("another object of this cluster exposes host port %s/%s already", netip.AddrPortFrom(e.Spec.HostIP, e.Spec.HostPort), e.Spec.Proto))
			}
			continue
		}
		if err := x.fwd.Add(ctx, e.Spec); err != nil {
			if ctx.Err() == nil {
				x.fail(ctx, e, err.Error())
			}
			continue
		}
		taken[e.Spec] = true
		x.have[e.Spec] = e
		delete(x.failed, e.Spec)
		msg := fmt.Sprintf("usernode exposed %s on the host at %s", e.What, netip.AddrPortFrom(e.Spec.HostIP, e.Spec.HostPort))
		if e.Mapped != "" {
			msg += ": " + e.Mapped
		}
		x.l.Infof("%s of %s", msg, e.Obj)
		if x.told[e.Obj.UID+e.Spec.String()] != "" {
			x.event(ctx, e.Obj, "Normal", "Exposed", msg)
		}
		x.told[e.Obj.UID+e.Spec.String()] = ""
	}
	if x.lb {
		x.setLBStatus(ctx, want)
	}
	x.writeStatus(want)
}

// fail records that e's port is not open, and tells the user once per
// reason: an Event on the object (what `kubectl describe` shows).
func (x *exposer) fail(ctx context.Context, e exposure, why string) {
	x.failed[e.Spec] = why
	key := e.Obj.UID + e.Spec.String()
	if x.told[key] == why {
		return
	}
	x.told[key] = why
	msg := fmt.Sprintf("usernode could not expose %s on the host at %s: %s; it tries again every %s", e.What, netip.AddrPortFrom(e.Spec.HostIP, e.Spec.HostPort), why, retryEvery)
	x.l.Warnf("%s (%s)", msg, e.Obj)
	x.event(ctx, e.Obj, "Warning", "ExposeFailed", msg)
}

// event records a core/v1 Event on obj, as the node's component.
func (x *exposer) event(ctx context.Context, obj objRef, typ, reason, msg string) {
	now := time.Now().UTC().Format(time.RFC3339)
	ev := map[string]any{
		"metadata":       map[string]any{"generateName": obj.Name + ".", "namespace": obj.Namespace},
		"involvedObject": map[string]any{"apiVersion": "v1", "kind": obj.Kind, "namespace": obj.Namespace, "name": obj.Name, "uid": obj.UID},
		"type":           typ, "reason": reason, "message": msg, "count": 1,
		"firstTimestamp": now, "lastTimestamp": now,
		"source": map[string]any{"component": "usernode", "host": x.o.Node},
	}
	if err := x.c.send(ctx, http.MethodPost, "/api/v1/namespaces/"+obj.Namespace+"/events", ev, nil); err != nil && ctx.Err() == nil {
		x.l.V(1).Infof("event on %s: %v", obj, err)
	}
}

// setLBStatus gives each LoadBalancer Service usernode balances its
// ingress address and ports, and the annotation that says where on the
// host each port is.
func (x *exposer) setLBStatus(ctx context.Context, want []exposure) {
	for _, s := range x.svcs {
		if !balanced(&s) {
			continue
		}
		st, ann := lbWant(&s, want, x.failed, x.ingress)
		if reflect.DeepEqual(st, s.Status.LoadBalancer) && s.Metadata.Annotations[ExposedAnnotation] == ann {
			continue
		}
		path := "/api/v1/namespaces/" + s.Metadata.Namespace + "/services/" + s.Metadata.Name
		if err := x.c.send(ctx, http.MethodPatch, path+"/status", map[string]any{"status": map[string]any{"loadBalancer": st}}, nil); err != nil {
			x.l.V(1).Infof("status of Service %s/%s: %v", s.Metadata.Namespace, s.Metadata.Name, err)
			continue
		}
		var a any = ann
		if ann == "" {
			a = nil
		}
		if err := x.c.send(ctx, http.MethodPatch, path, map[string]any{"metadata": map[string]any{"annotations": map[string]any{ExposedAnnotation: a}}}, nil); err != nil {
			x.l.V(1).Infof("annotating Service %s/%s: %v", s.Metadata.Namespace, s.Metadata.Name, err)
		}
	}
}

func (x *exposer) writeStatus(want []exposure) {
	var st Exposure
	for _, e := range want {
		if why, bad := x.failed[e.Spec]; bad {
			st.Failed = append(st.Failed, failedPort{exposure: e, Reason: why})
		} else if _, ok := x.have[e.Spec]; ok {
			st.Exposed = append(st.Exposed, e)
		}
	}
	if err := writeJSON(x.status, st); err != nil {
		x.l.V(1).Infof("%v", err)
	}
}

// informer lists path, then watches it from the list's resourceVersion,
// and lists again whenever the watch ends; after each change it calls
// changed with every object, by namespace/name.
func (x *exposer) informer(ctx context.Context, path string, changed func(map[string]json.RawMessage)) {
	sep := "?"
	if u, err := url.Parse(path); err == nil && u.RawQuery != "" {
		sep = "&"
	}
	type meta struct {
		Metadata struct {
			Namespace, Name, ResourceVersion string
		} `json:"metadata"`
	}
	for ctx.Err() == nil {
		var list struct {
			meta
			Items []json.RawMessage `json:"items"`
		}
		if err := x.c.get(ctx, path, &list); err != nil {
			sleepCtx(ctx, 2*time.Second)
			continue
		}
		objs := map[string]json.RawMessage{}
		for _, raw := range list.Items {
			var m meta
			if json.Unmarshal(raw, &m) == nil {
				objs[m.Metadata.Namespace+"/"+m.Metadata.Name] = raw
			}
		}
		changed(objs)
		err := x.c.watch(ctx, path+sep+"watch=1&timeoutSeconds=60&resourceVersion="+list.Metadata.ResourceVersion, func(typ string, obj json.RawMessage) {
			var m meta
			if json.Unmarshal(obj, &m) != nil || m.Metadata.Name == "" {
				return
			}
			key := m.Metadata.Namespace + "/" + m.Metadata.Name
			if typ == "DELETED" {
				delete(objs, key)
			} else {
				objs[key] = obj
			}
			changed(objs)
		})
		if err != nil && ctx.Err() == nil {
			x.l.V(1).Infof("watching %s: %v; listing again", path, err)
		}
	}
}

// decodeAll decodes each object; one that does not decode is left out.
func decodeAll[T any](m map[string]json.RawMessage) map[string]T {
	out := make(map[string]T, len(m))
	for k, raw := range m {
		var v T
		if json.Unmarshal(raw, &v) == nil {
			out[k] = v
		}
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// readExposure is what the running node's host side last wrote.
func readExposure(path string) (*Exposure, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e Exposure
	return &e, json.Unmarshal(b, &e)
}
