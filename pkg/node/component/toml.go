package component

import (
	"bytes"

	"github.com/pelletier/go-toml/v2"
)

// TOML encodes a runtime's typed config (containerd's, CRI-O's) with
// indented tables, as their own docs write them.
func TOML(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
