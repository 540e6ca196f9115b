// Package nodetest gives the components' tests the environment `up`
// renders a default node in, so that each test starts from the model's
// values and overrides only what it tests.
package nodetest

import (
	"reflect"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/pki"
)

// Env is a default node's: the default cluster model, the node's layout
// and containerd's endpoint.
func Env() *component.Env {
	cl := cluster.DefaultCluster()
	return &component.Env{Cluster: cl, Node: cl.Self(), PKI: pki.Paths(pki.DefaultDir),
		Kubeconfigs: kubeconfig.Paths(kubeconfig.DefaultDir),
		Runtime:     component.Runtime{Name: "containerd", Endpoint: "unix:///run/containerd/containerd.sock"}}
}

// Fill sets each named field of dst that is zero to src's: a test's
// options with the topology the model gives where the test leaves it out.
// A name that is not a field panics, so a rename fails the tests.
func Fill[T any](dst, src T, fields ...string) T {
	d, s := reflect.ValueOf(&dst).Elem(), reflect.ValueOf(src)
	for _, f := range fields {
		if fv := d.FieldByName(f); fv.IsZero() {
			fv.Set(s.FieldByName(f))
		}
	}
	return dst
}
