// Package kubeconfig writes the node's kubeconfigs: one per component
// inside the node (/etc/usernode/*.kubeconfig, regenerated at each `up`)
// and the host user's, which can be merged into ~/.kube/config on request.
//
// Certificates are embedded rather than referenced by path: the host user's
// copy must work outside the node's mount namespace, where
// /var/lib/usernode/pki does not exist, and one form for all keeps it simple.
//
// The types are client-go's clientcmd/api/v1, marshalled with
// sigs.k8s.io/yaml; clientcmd itself (its loader and Write) is not used,
// because it pulls in most of client-go and, on Merge, would decode the
// user's file into typed structs and drop whatever fields it does not know.
package kubeconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/usernode/usernode/internal/atomicfile"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/pkg/node/pki"
)

const (
	// DefaultServer is kube-apiserver as seen from inside the node's network
	// namespace, where it listens, and from the host, where the port
	// forwarder listens on the same address and port.
	DefaultServer = "https://127.0.0.1:6443"
	// DefaultDir is where the components' kubeconfigs live inside the node:
	// a per-run tmpfs copy of /etc, so they are rewritten at each `up`.
	DefaultDir = "/etc/usernode"
)

// ContextName is the name of the host user's context (and its cluster and
// user entries) for the node called nodeName.
func ContextName(nodeName string) string { return "usernode-" + nodeName }

// Options is one kubeconfig: a cluster, a user with a client certificate,
// and the context joining them, all called Name.
type Options struct {
	Name      string
	Server    string // default DefaultServer
	CAData    []byte // PEM
	CertData  []byte // PEM
	KeyData   []byte // PEM
	Namespace string // optional default namespace of the context
}

// New builds the config. CurrentContext is set to the one context.
func New(o Options) *clientcmdv1.Config {
	if o.Server == "" {
		o.Server = DefaultServer
	}
	return &clientcmdv1.Config{
		APIVersion: "v1",
		Kind:       "Config",
		Clusters: []clientcmdv1.NamedCluster{{
			Name:    o.Name,
			Cluster: clientcmdv1.Cluster{Server: o.Server, CertificateAuthorityData: o.CAData},
		}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{
			Name:     o.Name,
			AuthInfo: clientcmdv1.AuthInfo{ClientCertificateData: o.CertData, ClientKeyData: o.KeyData},
		}},
		Contexts: []clientcmdv1.NamedContext{{
			Name:    o.Name,
			Context: clientcmdv1.Context{Cluster: o.Name, AuthInfo: o.Name, Namespace: o.Namespace},
		}},
		CurrentContext: o.Name,
	}
}

// FromPKI builds a config for the identity in pair, trusting the cluster CA.
func FromPKI(name, server string, p *pki.PKI, pair pki.Pair) (*clientcmdv1.Config, error) {
	ca, err := p.CAPEM()
	if err != nil {
		return nil, err
	}
	cert, key, err := pair.Load()
	if err != nil {
		return nil, err
	}
	return New(Options{Name: name, Server: server, CAData: ca, CertData: cert, KeyData: key}), nil
}

// Render is the YAML form of cfg.
func Render(cfg *clientcmdv1.Config) ([]byte, error) {
	return yaml.Marshal(cfg)
}

// Files are the per-run kubeconfigs of the node's components.
type Files struct {
	Admin             string
	Kubelet           string
	ControllerManager string
	Scheduler         string
	KubeProxy         string
	CoreDNS           string
	// Bootstrap is a worker's bootstrap kubeconfig (the join's token),
	// from which its kubelet writes Kubelet; both persist across runs.
	Bootstrap string
}

// Paths is where WriteComponents puts each file under dir.
func Paths(dir string) Files {
	return Files{
		Admin:             filepath.Join(dir, "admin.kubeconfig"),
		Kubelet:           filepath.Join(dir, "kubelet.kubeconfig"),
		ControllerManager: filepath.Join(dir, "controller-manager.kubeconfig"),
		Scheduler:         filepath.Join(dir, "scheduler.kubeconfig"),
		KubeProxy:         filepath.Join(dir, "kube-proxy.kubeconfig"),
		CoreDNS:           filepath.Join(dir, "coredns.kubeconfig"),
	}
}

// WriteComponents writes one kubeconfig per component into dir
// (DefaultDir), each with its own identity from p and the server URL
// (DefaultServer if empty) they reach kube-apiserver at inside the node.
func WriteComponents(dir, nodeName, server string, p *pki.PKI) (Files, error) {
	f := Paths(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, err
	}
	for path, pair := range map[string]pki.Pair{
		f.Admin:             p.Admin,
		f.Kubelet:           p.KubeletClient,
		f.ControllerManager: p.ControllerManager,
		f.Scheduler:         p.Scheduler,
		f.KubeProxy:         p.KubeProxy,
		f.CoreDNS:           p.CoreDNS,
	} {
		cfg, err := FromPKI(ContextName(nodeName), server, p, pair)
		if err != nil {
			return Files{}, err
		}
		if err := Write(path, cfg); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// NewFiles is a kubeconfig whose identity is in files that change under
// it (a kubelet's rotated client certificate: cert and key in one PEM),
// trusting the CA in caFile.
func NewFiles(name, server, caFile, certFile, keyFile string) *clientcmdv1.Config {
	cfg := New(Options{Name: name, Server: server})
	cfg.Clusters[0].Cluster.CertificateAuthority = caFile
	cfg.AuthInfos[0].AuthInfo = clientcmdv1.AuthInfo{ClientCertificate: certFile, ClientKey: keyFile}
	return cfg
}

// Write writes cfg to path atomically with mode 0600 (it holds a key).
func Write(path string, cfg *clientcmdv1.Config) error {
	b, err := Render(cfg)
	if err != nil {
		return err
	}
	return writeFile(path, b)
}

// MergeOptions says how Merge treats the current context.
type MergeOptions struct {
	// SetCurrentContext makes cfg's current context the file's. Without it
	// the file's current context is kept, unless the file has none.
	SetCurrentContext bool
}

// Merge adds cfg's clusters, users and contexts to the kubeconfig at path
// (created if missing), replacing entries of the same names and keeping
// every other entry and field as it was, including fields this package's
// types do not know. It takes kubectl's lock (path + ".lock") while it
// works, writes atomically and leaves the file mode 0600.
//
// Comments and key order in the user's file are not kept: kubectl's own
// `config set-context` rewrites the file the same way.
func Merge(path string, cfg *clientcmdv1.Config, o MergeOptions) error {
	return edit(path, func(doc map[string]any) error {
		add, err := toGeneric(cfg)
		if err != nil {
			return err
		}
		for _, key := range []string{"clusters", "users", "contexts"} {
			list, err := namedList(doc, key)
			if err != nil {
				return err
			}
			newList, _ := add[key].([]any)
			for _, item := range newList {
				name := itemName(item)
				if i := indexOf(list, name); i >= 0 {
					list[i] = item
				} else {
					list = append(list, item)
				}
			}
			doc[key] = list
		}
		cur, _ := doc["current-context"].(string)
		if cfg.CurrentContext != "" && (o.SetCurrentContext || cur == "") {
			doc["current-context"] = cfg.CurrentContext
		}
		return nil
	})
}

// Remove deletes the cluster, user and context called name from the
// kubeconfig at path, and the current context if it was that one. A
// missing file or name is not an error.
func Remove(path, name string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return edit(path, func(doc map[string]any) error {
		for _, key := range []string{"clusters", "users", "contexts"} {
			list, err := namedList(doc, key)
			if err != nil {
				return err
			}
			if i := indexOf(list, name); i >= 0 {
				doc[key] = append(list[:i], list[i+1:]...)
			}
		}
		if cur, _ := doc["current-context"].(string); cur == name {
			doc["current-context"] = ""
		}
		return nil
	})
}

func edit(path string, change func(map[string]any) error) error {
	// ~/.kube/config is often a symlink into a dotfiles repo: replace the
	// target, not the link.
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	unlock, err := lock(path)
	if err != nil {
		return err
	}
	defer unlock()

	doc := map[string]any{}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case len(bytes.TrimSpace(b)) > 0:
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		d := json.NewDecoder(bytes.NewReader(j))
		// Keep numbers as written (no float64 round trip).
		d.UseNumber()
		if err := d.Decode(&doc); err != nil {
			return fmt.Errorf("%s: not a kubeconfig: %w", path, err)
		}
		if doc == nil {
			doc = map[string]any{}
		}
	}
	if _, ok := doc["apiVersion"]; !ok {
		doc["apiVersion"] = "v1"
	}
	if _, ok := doc["kind"]; !ok {
		doc["kind"] = "Config"
	}
	if err := change(doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	out, err := yaml.JSONToYAML(j)
	if err != nil {
		return err
	}
	return writeFile(path, out)
}

// lock takes the same lock kubectl and client-go take before writing a
// kubeconfig: a symlink at path+".lock" whose creation fails if it exists.
func lock(path string) (func(), error) {
	l := path + ".lock"
	if err := os.Symlink(strconv.Itoa(os.Getpid()), l); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s exists: another kubectl may be writing %s; remove it if no one is", l, path)
		}
		return nil, err
	}
	// A lock that cannot be removed stays, and the next writer's lock
	// names it and says to remove it: nothing better to do here.
	return func() { _ = os.Remove(l) }, nil
}

func toGeneric(cfg *clientcmdv1.Config) (map[string]any, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return m, d.Decode(&m)
}

func namedList(doc map[string]any, key string) ([]any, error) {
	switch v := doc[key].(type) {
	case nil:
		return nil, nil
	case []any:
		return v, nil
	default:
		return nil, fmt.Errorf("%s is a %T, not a list", key, v)
	}
}

func itemName(item any) string {
	m, _ := item.(map[string]any)
	s, _ := m["name"].(string)
	return s
}

func indexOf(list []any, name string) int {
	for i, item := range list {
		if itemName(item) == name {
			return i
		}
	}
	return -1
}

// writeFile replaces path atomically, 0600 from the start: it holds a key.
func writeFile(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }
