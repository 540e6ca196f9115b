package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/usernode/usernode/pkg/bootstraptoken"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/join"
	"github.com/usernode/usernode/pkg/node/kubeconfig"
	"github.com/usernode/usernode/pkg/node/kubelet"
	"github.com/usernode/usernode/pkg/node/pki"
	"github.com/usernode/usernode/pkg/sandbox"
)

// Joined says whether the node with sandbox c has joined a cluster
// before: its kubelet holds a client certificate of that cluster.
func Joined(c sandbox.Config) bool {
	// Lstat: it is a symlink to an absolute path inside the node.
	_, err := os.Lstat(PathsOf(c).inside(kubelet.ClientCertCurrent))
	return err == nil
}

// CheckJoin asks the cluster, with the bootstrap token, whether cl's
// node fits in: no other node has its name (a kubelet of that name would
// take the other's Node over) or its InternalIP. rejoin is set when this
// host's node joined before, under the same name.
func CheckJoin(ctx context.Context, jc *join.Cluster, tok bootstraptoken.Token, cl *cluster.Cluster, rejoin bool) error {
	var nodes corev1.NodeList
	if err := tokenGet(ctx, jc, tok, "/api/v1/nodes", &nodes); err != nil {
		return fmt.Errorf("listing the cluster's nodes with the token: %w", err)
	}
	return checkNodeFits(cl.Self(), nodes.Items, rejoin)
}

// SharedConfig is the cluster section the cluster's control plane
// publishes (cluster.SharedConfigMap), read with the bootstrap token: the
// address ranges, DNS and VXLAN port its workers must use.
func SharedConfig(ctx context.Context, jc *join.Cluster, tok bootstraptoken.Token) (*cluster.ClusterConfig, error) {
	var cm corev1.ConfigMap
	if err := tokenGet(ctx, jc, tok, "/api/v1/namespaces/"+bootstraptoken.ClusterInfoNS+"/configmaps/"+cluster.SharedConfigMap, &cm); err != nil {
		return nil, fmt.Errorf("reading the cluster's settings: %w", err)
	}
	var cc cluster.ClusterConfig
	if err := yaml.UnmarshalStrict([]byte(cm.Data[cluster.SharedKey]), &cc); err != nil {
		return nil, fmt.Errorf("the cluster's settings (%s/%s): %w", bootstraptoken.ClusterInfoNS, cluster.SharedConfigMap, err)
	}
	return &cc, nil
}

// tokenGet GETs path from the cluster with the bootstrap token, trusting
// only the pinned CA; a refusal says the control plane may predate what
// this usernode asks of it.
func tokenGet(ctx context.Context, jc *join.Cluster, tok bootstraptoken.Token, path string, out any) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(jc.CA) {
		return errors.New("the cluster's CA is not PEM")
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jc.Server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok.String())
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s (a control plane older than this usernode does not allow it: upgrade it)", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func checkNodeFits(n *cluster.Node, nodes []corev1.Node, rejoin bool) error {
	for _, other := range nodes {
		if other.Name == n.Name {
			if rejoin {
				continue
			}
			return fmt.Errorf("the cluster already has a node named %q: give this one another --name, or, if that node is gone for good, `kubectl delete node %s` on the control plane first", n.Name, n.Name)
		}
		for _, a := range other.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && n.Subnet.Contains(ip) {
				return fmt.Errorf("node %q's InternalIP %s is in this node's subnet %s: two nodes would share an address; give this one another --node-subnet (or another --name, which picks another subnet)", other.Name, ip, n.Subnet)
			}
		}
	}
	return nil
}

// WriteJoin leaves in the node's state dir what its worker starts from:
// the cluster's CA, a bootstrap kubeconfig with the token (the kubelet
// trades it for its own certificate at its first start) and the join
// record that makes later `up`s start the same worker.
func WriteJoin(sb sandbox.Config, cfg *cluster.Config, jc *join.Cluster, tok bootstraptoken.Token) error {
	p := PathsOf(sb)
	ps := pki.Paths(p.PKI())
	if err := os.MkdirAll(filepath.Dir(ps.CA.Cert), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(sb.StateDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(ps.CA.Cert, jc.CA, 0o600); err != nil {
		return err
	}
	kc := kubeconfig.New(kubeconfig.Options{Name: kubeconfig.ContextName(cfg.Name), Server: jc.Server, CAData: jc.CA})
	kc.AuthInfos[0].AuthInfo = clientcmdv1.AuthInfo{Token: tok.String()}
	if err := kubeconfig.Write(p.inside(BootstrapKubeconfig), kc); err != nil {
		return err
	}
	return cluster.WriteJoin(sb.StateDir, cfg)
}
