package node

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/usernode/usernode/pkg/port"
)

func decode[T any](t *testing.T, items string) map[string]T {
	t.Helper()
	var list []T
	if err := json.Unmarshal([]byte(items), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]T{}
	for i, v := range list {
		out[string(rune('a'+i))] = v
	}
	return out
}

// What the cluster's objects ask the host for: NodePorts of NodePort and
// LoadBalancer Services, the ports of the LoadBalancers usernode balances
// (not another class's; a privileged one moved up by 10000), and the
// hostPorts of this node's running pods, all on the publish address.
func TestDesired(t *testing.T) {
	svcs := decode[service](t, `[
	 {"metadata":{"namespace":"default","name":"web","uid":"1"},"spec":{"type":"NodePort","clusterIP":"10.96.0.5","ports":[{"protocol":"TCP","port":80,"nodePort":30080},{"protocol":"UDP","port":53,"nodePort":30053}]}},
	 {"metadata":{"namespace":"default","name":"lb","uid":"2"},"spec":{"type":"LoadBalancer","clusterIP":"10.96.0.6","ports":[{"protocol":"TCP","port":80,"nodePort":31000},{"protocol":"UDP","port":5353}]}},
	 {"metadata":{"namespace":"default","name":"other","uid":"3"},"spec":{"type":"LoadBalancer","loadBalancerClass":"example.com/lb","clusterIP":"10.96.0.7","ports":[{"protocol":"TCP","port":8080,"nodePort":31001}]}},
	 {"metadata":{"namespace":"default","name":"ours","uid":"4"},"spec":{"type":"LoadBalancer","loadBalancerClass":"usernode.io/loadbalancer","clusterIP":"10.96.0.8","ports":[{"protocol":"TCP","port":8443}]}},
	 {"metadata":{"namespace":"default","name":"sctp","uid":"5"},"spec":{"type":"NodePort","ports":[{"protocol":"SCTP","nodePort":31002}]}},
	 {"metadata":{"namespace":"kube-system","name":"kube-dns","uid":"6"},"spec":{"type":"ClusterIP","clusterIP":"10.96.0.10","ports":[{"protocol":"UDP","port":53}]}}]`)
	pods := decode[pod](t, `[
	 {"metadata":{"namespace":"default","name":"hp","uid":"7"},"spec":{"nodeName":"n1","containers":[{"ports":[{"containerPort":8080,"hostPort":18088},{"containerPort":53,"hostPort":53,"protocol":"UDP"},{"containerPort":9090}]}]},"status":{"phase":"Running","podIP":"10.88.0.9"}},
	 {"metadata":{"namespace":"default","name":"pending","uid":"8"},"spec":{"nodeName":"n1","containers":[{"ports":[{"containerPort":8080,"hostPort":18089}]}]},"status":{"phase":"Pending"}},
	 {"metadata":{"namespace":"default","name":"elsewhere","uid":"9"},"spec":{"nodeName":"n2","containers":[{"ports":[{"containerPort":8080,"hostPort":18090}]}]},"status":{"phase":"Running","podIP":"10.88.1.9"}}]`)
	pub := netip.MustParseAddr("198.51.100.1")
	got := desired(svcs, pods, exposeOpts{Node: "n1", Publish: pub, UnprivStart: 1024})
	var lines []string
	for _, e := range got {
		lines = append(lines, e.Obj.String()+" "+e.What+" "+e.Spec.String())
		if e.Spec.HostIP != pub {
			t.Errorf("%s not on the publish address", e.Spec)
		}
	}
	want := []string{
		"service/default/lb LoadBalancer port 5353/UDP 198.51.100.1:5353/udp->10.96.0.6:5353",
		"service/default/ours LoadBalancer port 8443/TCP 198.51.100.1:8443/tcp->10.96.0.8:8443",
		"pod/default/hp hostPort 53/UDP 198.51.100.1:10053/udp->10.88.0.9:53",
		"service/default/lb LoadBalancer port 80/TCP 198.51.100.1:10080/tcp->10.96.0.6:80",
		"pod/default/hp hostPort 18088/TCP 198.51.100.1:18088/tcp->10.88.0.9:8080",
		"service/default/web NodePort 30053/UDP 198.51.100.1:30053/udp->30053",
		"service/default/web NodePort 30080/TCP 198.51.100.1:30080/tcp->30080",
		"service/default/lb NodePort 31000/TCP 198.51.100.1:31000/tcp->31000",
		"service/default/other NodePort 31001/TCP 198.51.100.1:31001/tcp->31001",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range got {
		if (e.Spec.HostPort == 10080 || e.Spec.HostPort == 10053) != (e.Mapped != "") {
			t.Errorf("%s mapped %q", e.Spec, e.Mapped)
		}
	}

	// The LoadBalancer's status: its ingress, each port, an error on the
	// one that is not open; the annotation says where the open ones are.
	lb := svcs["b"]
	failed := map[port.Spec]string{}
	for _, e := range got {
		if e.Obj.Name == "lb" && e.Spec.Proto == "udp" {
			failed[e.Spec] = "in use"
		}
	}
	st, ann := lbWant(&lb, got, failed, pub)
	b, _ := json.Marshal(st)
	if string(b) != `{"ingress":[{"ip":"198.51.100.1","ipMode":"Proxy","ports":[{"port":5353,"protocol":"UDP","error":"usernode.io/PortNotExposed"},{"port":80,"protocol":"TCP"}]}]}` {
		t.Errorf("status %s", b)
	}
	if ann != "80/TCP=198.51.100.1:10080" {
		t.Errorf("annotation %q", ann)
	}
}
