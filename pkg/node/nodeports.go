package node

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/log"

	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// service is the part of a Service the NodePort forwarding reads.
type service struct {
	Metadata struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Type  string `json:"type"`
		Ports []struct {
			Protocol string `json:"protocol"`
			NodePort int    `json:"nodePort"`
		} `json:"ports"`
	} `json:"spec"`
}

// nodePorts lists the forwards that Services' NodePorts ask for: each one
// on the host's 127.0.0.1 at the same port.
func nodePorts(svcs map[string]service) map[port.Spec]bool {
	want := map[port.Spec]bool{}
	for _, s := range svcs {
		if s.Spec.Type != "NodePort" && s.Spec.Type != "LoadBalancer" {
			continue
		}
		for _, p := range s.Spec.Ports {
			proto := strings.ToLower(p.Protocol)
			if proto == "" {
				proto = "tcp"
			}
			if p.NodePort <= 0 || p.NodePort > 65535 || (proto != "tcp" && proto != "udp") {
				continue // SCTP is not forwarded
			}
			want[port.Spec{Proto: proto, HostIP: loopback, HostPort: uint16(p.NodePort), ChildPort: uint16(p.NodePort)}] = true
		}
	}
	return want
}

// watchNodePorts keeps the forwarder's NodePort forwards equal to what the
// cluster's Services ask for, until ctx ends: list, then watch from the
// list's resourceVersion, and list again whenever the watch ends.
func watchNodePorts(ctx context.Context, c *apiClient, sock string, l *log.Logger) error {
	fwd := api.NewClient(sock)
	have := map[port.Spec]bool{}
	reconcile := func(svcs map[string]service) {
		want := nodePorts(svcs)
		for s := range have {
			if !want[s] && fwd.Remove(ctx, s) == nil {
				delete(have, s)
				l.Infof("NodePort %s closed on the host", s)
			}
		}
		for s := range want {
			if have[s] {
				continue
			}
			if err := fwd.Add(ctx, s); err != nil {
				if ctx.Err() == nil {
					l.Warnf("cannot expose NodePort %s on the host: %v", s, err)
				}
				continue
			}
			have[s] = true
			l.Infof("NodePort %s exposed on the host", s)
		}
	}
	for ctx.Err() == nil {
		var list struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
			Items []service `json:"items"`
		}
		if err := c.get(ctx, "/api/v1/services", &list); err != nil {
			sleepCtx(ctx, 2*time.Second)
			continue
		}
		svcs := map[string]service{}
		for _, s := range list.Items {
			svcs[s.Metadata.Namespace+"/"+s.Metadata.Name] = s
		}
		reconcile(svcs)
		// A port that failed (taken on the host) is retried at the next
		// list, at the latest when this watch times out. A watch that
		// fails (the API restarting, a resourceVersion too old) is
		// followed by a new list as well.
		err := c.watch(ctx, "/api/v1/services?watch=1&timeoutSeconds=60&resourceVersion="+list.Metadata.ResourceVersion, func(typ string, obj json.RawMessage) {
			var s service
			if json.Unmarshal(obj, &s) != nil || s.Metadata.Name == "" {
				return
			}
			key := s.Metadata.Namespace + "/" + s.Metadata.Name
			if typ == "DELETED" {
				delete(svcs, key)
			} else {
				svcs[key] = s
			}
			reconcile(svcs)
		})
		if err != nil && ctx.Err() == nil {
			l.V(1).Infof("watching Services: %v; listing them again", err)
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
