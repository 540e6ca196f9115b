package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"
)

// File is usernode's own config file, $XDG_CONFIG_HOME/usernode/config.yaml
// or --config. Flags given on the command line win over it.
type File struct {
	Name        string `json:"name,omitempty"`
	StateDir    string `json:"stateDir,omitempty"`
	Net         string `json:"net,omitempty"`
	BinDir      string `json:"binDir,omitempty"`
	APIPort     uint16 `json:"apiPort,omitempty"`
	KubeletPort uint16 `json:"kubeletPort,omitempty"`
	// PortBusyPoll is --port-busy-poll: a duration such as "50us", "0"
	// for off.
	PortBusyPoll string `json:"portBusyPoll,omitempty"`
	KeepSourceIP bool   `json:"keepSourceIP,omitempty"`
}

// DefaultConfigFile is where usernode looks when --config is not given.
func DefaultConfigFile(getenv func(string) string) string {
	dir := getenv("XDG_CONFIG_HOME")
	if dir == "" {
		if getenv("HOME") == "" {
			return ""
		}
		dir = filepath.Join(getenv("HOME"), ".config")
	}
	return filepath.Join(dir, "usernode", "config.yaml")
}

// LoadFile reads a config file. A missing default file is no error; a
// malformed one, or a field it does not know, is, naming the file.
func LoadFile(path string, explicit bool) (*File, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return &File{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("config file %s is not valid: %v; fix it (fields: name, stateDir, net, binDir, apiPort, kubeletPort, portBusyPoll, keepSourceIP) or move it away", path, err)
	}
	if f.PortBusyPoll != "" {
		if d, err := time.ParseDuration(f.PortBusyPoll); err != nil || d < 0 {
			return nil, fmt.Errorf("config file %s: portBusyPoll %q is not a duration such as \"50us\" (or \"0\" for off)", path, f.PortBusyPoll)
		}
	}
	return &f, nil
}
