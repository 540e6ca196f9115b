package node

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/usernode/usernode/pkg/port"
)

// What usernode exposes on the host, from the cluster's objects (the
// host side watches them; expose_watch.go):
//
//   - every NodePort (of NodePort and LoadBalancer Services) at its own
//     port, dialled at the node's 127.0.0.1, where kube-proxy serves it;
//   - every port of a LoadBalancer Service of no class or of
//     LoadBalancerClass, at the Service's own port, dialled at its
//     ClusterIP: usernode is the load-balancer controller of its node, as
//     k3s's rootlessports is of its;
//   - every hostPort of a running pod on this node, dialled at the pod's
//     IP and container port.
//
// All bind on the publish address (127.0.0.1 by default). A port below
// net.ipv4.ip_unprivileged_port_start cannot be bound by a rootless node;
// LoadBalancer ports and hostPorts there move up by PrivilegedPortOffset
// (k3s's choice), and the Service's annotation and `usernode status` say
// where. A NodePort is always above 1024.

// LoadBalancerClass is the class of the Services usernode balances, with
// those of no class.
const LoadBalancerClass = "usernode.io/loadbalancer"

// PrivilegedPortOffset is added to a privileged LoadBalancer port or
// hostPort: 80 is exposed at 10080.
const PrivilegedPortOffset = 10000

// ExposedAnnotation on a LoadBalancer Service lists where its ports are
// exposed on the host: "80/TCP=127.0.0.1:10080,53/UDP=127.0.0.1:53".
const ExposedAnnotation = "usernode.io/exposed-ports"

type objRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

func (o objRef) String() string { return strings.ToLower(o.Kind) + "/" + o.Namespace + "/" + o.Name }

// exposure is one host port usernode wants open, for one object.
type exposure struct {
	Spec port.Spec `json:"spec"`
	Obj  objRef    `json:"object"`
	// What names the port as the user knows it ("NodePort 30080/TCP").
	What string `json:"what"`
	// Mapped says why the host port is not the object's own.
	Mapped string `json:"mapped,omitempty"`
	// svcPort is a LoadBalancer port's own (for its status).
	svcPort uint16
	proto   string
}

// exposeOpts are where and how this node exposes ports.
type exposeOpts struct {
	Node        string     // this node: hostPorts of its own pods only
	Publish     netip.Addr // where every port binds on the host
	UnprivStart int        // net.ipv4.ip_unprivileged_port_start
}

type service struct {
	Metadata struct {
		Namespace   string            `json:"namespace"`
		Name        string            `json:"name"`
		UID         string            `json:"uid"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Type              string  `json:"type"`
		ClusterIP         string  `json:"clusterIP"`
		LoadBalancerClass *string `json:"loadBalancerClass"`
		Ports             []struct {
			Protocol string `json:"protocol"`
			Port     int    `json:"port"`
			NodePort int    `json:"nodePort"`
		} `json:"ports"`
	} `json:"spec"`
	Status struct {
		LoadBalancer lbStatus `json:"loadBalancer"`
	} `json:"status"`
}

type lbStatus struct {
	Ingress []lbIngress `json:"ingress,omitempty"`
}

type lbIngress struct {
	IP     string       `json:"ip,omitempty"`
	IPMode string       `json:"ipMode,omitempty"`
	Ports  []portStatus `json:"ports,omitempty"`
}

type portStatus struct {
	Port     int     `json:"port"`
	Protocol string  `json:"protocol"`
	Error    *string `json:"error,omitempty"`
}

type pod struct {
	Metadata struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		UID       string `json:"uid"`
	} `json:"metadata"`
	Spec struct {
		NodeName   string `json:"nodeName"`
		Containers []struct {
			Ports []struct {
				Protocol      string `json:"protocol"`
				ContainerPort int    `json:"containerPort"`
				HostPort      int    `json:"hostPort"`
			} `json:"ports"`
		} `json:"containers"`
	} `json:"spec"`
	Status struct {
		Phase string `json:"phase"`
		PodIP string `json:"podIP"`
	} `json:"status"`
}

// balanced says whether usernode is s's load balancer.
func balanced(s *service) bool {
	return s.Spec.Type == "LoadBalancer" && (s.Spec.LoadBalancerClass == nil || *s.Spec.LoadBalancerClass == LoadBalancerClass)
}

func protoOf(p string) (string, bool) {
	switch strings.ToLower(p) {
	case "", "tcp":
		return "tcp", true
	case "udp":
		return "udp", true
	}
	return "", false // SCTP is not forwarded
}

// hostPortFor is where a LoadBalancer port or hostPort p is exposed, and
// why it moved if it did.
func (o exposeOpts) hostPortFor(p int) (uint16, string) {
	if p < o.UnprivStart && p+PrivilegedPortOffset <= 65535 {
		return uint16(p + PrivilegedPortOffset), fmt.Sprintf("%d is below net.ipv4.ip_unprivileged_port_start=%d, which only root may bind: exposed at %d (+%d); `sysctl net.ipv4.ip_unprivileged_port_start=%d` as root lets it have its own", p, o.UnprivStart, p+PrivilegedPortOffset, PrivilegedPortOffset, p)
	}
	return uint16(p), ""
}

// desired is every port the objects ask for, sorted by host port.
func desired(svcs map[string]service, pods map[string]pod, o exposeOpts) []exposure {
	var out []exposure
	for _, s := range svcs {
		ref := objRef{"Service", s.Metadata.Namespace, s.Metadata.Name, s.Metadata.UID}
		if s.Spec.Type != "NodePort" && s.Spec.Type != "LoadBalancer" {
			continue
		}
		clusterIP, ipErr := netip.ParseAddr(s.Spec.ClusterIP)
		for _, p := range s.Spec.Ports {
			proto, ok := protoOf(p.Protocol)
			if !ok {
				continue
			}
			if p.NodePort > 0 && p.NodePort <= 65535 {
				out = append(out, exposure{Obj: ref, What: fmt.Sprintf("NodePort %d/%s", p.NodePort, strings.ToUpper(proto)),
					Spec: port.Spec{Proto: proto, HostIP: o.Publish, HostPort: uint16(p.NodePort), ChildPort: uint16(p.NodePort)}})
			}
			if !balanced(&s) || ipErr != nil || p.Port <= 0 || p.Port > 65535 {
				continue
			}
			hp, mapped := o.hostPortFor(p.Port)
			out = append(out, exposure{Obj: ref, What: fmt.Sprintf("LoadBalancer port %d/%s", p.Port, strings.ToUpper(proto)), Mapped: mapped,
				svcPort: uint16(p.Port), proto: proto,
				Spec: port.Spec{Proto: proto, HostIP: o.Publish, HostPort: hp, ChildPort: uint16(p.Port), ChildIP: clusterIP}})
		}
	}
	for _, p := range pods {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if p.Spec.NodeName != o.Node || p.Status.Phase != "Running" || err != nil {
			continue
		}
		ref := objRef{"Pod", p.Metadata.Namespace, p.Metadata.Name, p.Metadata.UID}
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				proto, ok := protoOf(cp.Protocol)
				if !ok || cp.HostPort <= 0 || cp.HostPort > 65535 || cp.ContainerPort <= 0 || cp.ContainerPort > 65535 {
					continue
				}
				hp, mapped := o.hostPortFor(cp.HostPort)
				out = append(out, exposure{Obj: ref, What: fmt.Sprintf("hostPort %d/%s", cp.HostPort, strings.ToUpper(proto)), Mapped: mapped,
					Spec: port.Spec{Proto: proto, HostIP: o.Publish, HostPort: hp, ChildPort: uint16(cp.ContainerPort), ChildIP: ip}})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Spec.HostPort != b.Spec.HostPort {
			return a.Spec.HostPort < b.Spec.HostPort
		}
		if a.Spec.Proto != b.Spec.Proto {
			return a.Spec.Proto < b.Spec.Proto
		}
		return a.Obj.String() < b.Obj.String()
	})
	return out
}

// lbWant is the status and annotation usernode gives a LoadBalancer
// Service it balances, from its exposures and which of them failed.
func lbWant(s *service, exps []exposure, failed map[port.Spec]string, ingress netip.Addr) (lbStatus, string) {
	ing := lbIngress{IP: ingress.String(), IPMode: "Proxy"}
	var ann []string
	for _, e := range exps {
		if e.svcPort == 0 || e.Obj.UID != s.Metadata.UID {
			continue
		}
		ps := portStatus{Port: int(e.svcPort), Protocol: strings.ToUpper(e.proto)}
		if _, bad := failed[e.Spec]; bad {
			reason := "usernode.io/PortNotExposed"
			ps.Error = &reason
		} else {
			ann = append(ann, fmt.Sprintf("%d/%s=%s", e.svcPort, ps.Protocol, netip.AddrPortFrom(e.Spec.HostIP, e.Spec.HostPort)))
		}
		ing.Ports = append(ing.Ports, ps)
	}
	return lbStatus{Ingress: []lbIngress{ing}}, strings.Join(ann, ",")
}
