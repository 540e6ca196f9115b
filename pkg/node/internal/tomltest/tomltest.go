// Package tomltest reads rendered TOML configs back in tests: loosely, to
// look at one key, and strictly, into the typed config that rendered them
// (a key the type does not have fails).
package tomltest

import (
	"bytes"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// Raw decodes b into nested maps.
func Raw(t *testing.T, b []byte) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := toml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return m
}

// At follows a key path; each element is one key (dots inside keys are
// part of the key, as in plugins."io.containerd.grpc.v1.cri").
func At(m map[string]any, path ...string) (any, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// Strict decodes b into into, refusing keys into's type lacks.
func Strict(t *testing.T, b []byte, into any) {
	t.Helper()
	d := toml.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(into); err != nil {
		t.Fatalf("strict decode: %v\n%s", err, b)
	}
}
