package node

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// nodePorts lists the forwards that Services' NodePorts ask for: each one
// on the host's 127.0.0.1 at the same port.
func nodePorts(svcs []*corev1.Service) map[port.Spec]bool {
	want := map[port.Spec]bool{}
	for _, s := range svcs {
		if s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.NodePort == 0 {
				continue
			}
			proto := strings.ToLower(string(p.Protocol))
			if proto != "tcp" && proto != "udp" {
				continue // SCTP: not forwarded
			}
			want[port.Spec{Proto: proto, HostIP: loopback, HostPort: uint16(p.NodePort), ChildPort: uint16(p.NodePort)}] = true
		}
	}
	return want
}

// watchNodePorts keeps the forwarder's NodePort forwards equal to what the
// cluster's Services ask for, until ctx ends.
func watchNodePorts(ctx context.Context, cs kubernetes.Interface, sock string, log io.Writer) error {
	client := api.NewClient(sock)
	f := informers.NewSharedInformerFactory(cs, 10*time.Minute)
	inf := f.Core().V1().Services()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: poke, DeleteFunc: poke, UpdateFunc: func(_, n any) { poke(n) }})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	have := map[port.Spec]bool{}
	for {
		svcs, _ := inf.Lister().List(labels.Everything())
		want := nodePorts(svcs)
		for s := range have {
			if !want[s] {
				if err := client.Remove(ctx, s); err == nil || ctx.Err() == nil {
					delete(have, s)
					fmt.Fprintf(log, "usernode: NodePort %s closed on the host\n", s)
				}
			}
		}
		for s := range want {
			if have[s] {
				continue
			}
			if err := client.Add(ctx, s); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintf(log, "usernode: cannot expose NodePort %s on the host: %v\n", s, err)
				continue
			}
			have[s] = true
			fmt.Fprintf(log, "usernode: NodePort %s exposed on the host\n", s)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-time.After(30 * time.Second): // retry ports that failed
		}
	}
}
