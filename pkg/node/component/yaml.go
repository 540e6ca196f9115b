package component

import (
	"strings"

	"sigs.k8s.io/yaml"
)

// YAMLStream encodes objects (the typed API objects a component applies:
// CoreDNS's, metrics-server's, the control plane's bootstrap) as one
// multi-document stream for `kubectl apply -f`.
func YAMLStream(objs ...any) ([]byte, error) {
	docs := make([]string, 0, len(objs))
	for _, obj := range objs {
		b, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(b))
	}
	return []byte(strings.Join(docs, "---\n")), nil
}
