// Package yamltest decodes generated configs the way their consumers do,
// for the config packages' tests.
package yamltest

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// Strict decodes b strictly into T (an unknown or misspelt field fails the
// test) and also into a raw map, to see what is present rather than what
// Go's zero values say.
func Strict[T any](t testing.TB, b []byte) (*T, map[string]any) {
	t.Helper()
	var c T
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		t.Fatalf("strict decode: %v\n%s", err, b)
	}
	raw := map[string]any{}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	return &c, raw
}

// Get follows a dotted path through a raw map.
func Get(raw map[string]any, path string) (any, bool) {
	var cur any = raw
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}
