package node

import (
	"encoding/json"
	"testing"

	"github.com/usernode/usernode/pkg/port"
)

func TestNodePorts(t *testing.T) {
	var list struct{ Items []service }
	err := json.Unmarshal([]byte(`{"items":[
	 {"metadata":{"namespace":"default","name":"web"},"spec":{"type":"NodePort","ports":[{"protocol":"TCP","nodePort":30080},{"protocol":"UDP","nodePort":30053}]}},
	 {"metadata":{"namespace":"default","name":"lb"},"spec":{"type":"LoadBalancer","ports":[{"protocol":"TCP","nodePort":31000}]}},
	 {"metadata":{"namespace":"default","name":"sctp"},"spec":{"type":"NodePort","ports":[{"protocol":"SCTP","nodePort":31001}]}},
	 {"metadata":{"namespace":"kube-system","name":"kube-dns"},"spec":{"type":"ClusterIP","ports":[{"protocol":"UDP"}]}}]}`), &list)
	if err != nil {
		t.Fatal(err)
	}
	svcs := map[string]service{}
	for _, s := range list.Items {
		svcs[s.Metadata.Namespace+"/"+s.Metadata.Name] = s
	}
	got := nodePorts(svcs)
	want := []port.Spec{
		{Proto: "tcp", HostIP: loopback, HostPort: 30080, ChildPort: 30080},
		{Proto: "udp", HostIP: loopback, HostPort: 30053, ChildPort: 30053},
		{Proto: "tcp", HostIP: loopback, HostPort: 31000, ChildPort: 31000},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing %v in %v", w, got)
		}
	}
}
