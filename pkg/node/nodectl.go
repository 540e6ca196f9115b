package node

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/usernode/usernode/internal/log"
	"github.com/usernode/usernode/pkg/cluster"
)

// A multi-node cluster's control plane runs two small controllers in its
// usernode, as the admin:
//
//   - node addresses: every kubelet runs with --cloud-provider=external,
//     so it registers tainted uninitialized and leaves its addresses to a
//     cloud controller. Here that is usernode: the node's InternalIP (the
//     kubelet's --node-ip) stays, its host IP (HostIPAnnotation, which the
//     node sets itself) becomes its ExternalIP, the only address another
//     host reaches it at, and the taint goes.
//   - kubelet serving certificates: a worker's kubelet asks for one by CSR
//     (serverTLSBootstrap); nothing in Kubernetes approves those. Here a
//     CSR is approved when it is a node's own, for exactly its name and
//     addresses, with server usages; any other is left alone.
const (
	uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"
	providedNodeIP     = "alpha.kubernetes.io/provided-node-ip"
	kubeletServing     = "kubernetes.io/kubelet-serving"
)

func runNodeControllers(ctx context.Context, c *apiClient, l *log.Logger) {
	for {
		if err := initNodes(ctx, c, l); err != nil && ctx.Err() == nil {
			l.V(1).Infof("node addresses: %v", err)
		}
		if err := approveServingCSRs(ctx, c, l); err != nil && ctx.Err() == nil {
			l.V(1).Infof("kubelet serving certificates: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// nodeAddresses is what a node's addresses should be, or false while the
// node has not said its host IP yet.
func nodeAddresses(n *corev1.Node) ([]corev1.NodeAddress, bool) {
	host := n.Annotations[cluster.HostIPAnnotation]
	internal := n.Annotations[providedNodeIP]
	if net.ParseIP(host) == nil || net.ParseIP(internal) == nil {
		return nil, false
	}
	return []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: internal},
		{Type: corev1.NodeExternalIP, Address: host},
		{Type: corev1.NodeHostName, Address: n.Name},
	}, true
}

func initNodes(ctx context.Context, c *apiClient, l *log.Logger) error {
	var nodes corev1.NodeList
	if err := c.get(ctx, "/api/v1/nodes", &nodes); err != nil {
		return err
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		want, ok := nodeAddresses(n)
		if !ok {
			continue
		}
		if !slices.Equal(n.Status.Addresses, want) {
			patch := map[string]any{"status": map[string]any{"addresses": want}}
			if err := c.send(ctx, http.MethodPatch, "/api/v1/nodes/"+n.Name+"/status", patch, nil); err != nil {
				return err
			}
			l.Infof("node %s: ExternalIP %s (its host), InternalIP %s", n.Name, want[1].Address, want[0].Address)
		}
		i := slices.IndexFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == uninitializedTaint })
		if i < 0 {
			continue
		}
		// The resourceVersion makes this a compare-and-swap of the whole
		// list: a taint another controller adds meanwhile is not lost.
		taints := slices.Delete(slices.Clone(n.Spec.Taints), i, i+1)
		patch := map[string]any{"metadata": map[string]any{"resourceVersion": n.ResourceVersion}, "spec": map[string]any{"taints": taints}}
		if err := c.send(ctx, http.MethodPatch, "/api/v1/nodes/"+n.Name, patch, nil); err != nil {
			return err
		}
	}
	return nil
}

func approveServingCSRs(ctx context.Context, c *apiClient, l *log.Logger) error {
	var csrs certv1.CertificateSigningRequestList
	if err := c.get(ctx, "/apis/certificates.k8s.io/v1/certificatesigningrequests?fieldSelector=spec.signerName%3D"+strings.ReplaceAll(kubeletServing, "/", "%2F"), &csrs); err != nil {
		return err
	}
	for i := range csrs.Items {
		csr := &csrs.Items[i]
		if len(csr.Status.Conditions) > 0 {
			continue // approved or denied already
		}
		node := strings.TrimPrefix(csr.Spec.Username, "system:node:")
		var n corev1.Node
		if node == csr.Spec.Username || c.get(ctx, "/api/v1/nodes/"+node, &n) != nil {
			continue
		}
		if err := servingCSROK(csr, &n); err != nil {
			l.V(1).Infof("CSR %s left for an admin: %v", csr.Name, err)
			continue
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certv1.CertificateSigningRequestCondition{
			Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "UsernodeKubeletServing",
			Message: "the node's own name and addresses, approved by usernode on the control plane"})
		if err := c.send(ctx, http.MethodPut, "/apis/certificates.k8s.io/v1/certificatesigningrequests/"+csr.Name+"/approval", csr, nil); err != nil {
			return err
		}
		l.Infof("approved the serving certificate of node %s's kubelet (CSR %s)", node, csr.Name)
	}
	return nil
}

// servingCSROK checks a kubelet-serving CSR against the node that sent
// it: its own identity, server usages only, and no name or address the
// node does not have.
func servingCSROK(csr *certv1.CertificateSigningRequest, n *corev1.Node) error {
	if csr.Spec.SignerName != kubeletServing || csr.Spec.Username != "system:node:"+n.Name || !slices.Contains(csr.Spec.Groups, "system:nodes") {
		return fmt.Errorf("not a kubelet-serving request by node %s itself", n.Name)
	}
	for _, u := range csr.Spec.Usages {
		if u != certv1.UsageDigitalSignature && u != certv1.UsageKeyEncipherment && u != certv1.UsageServerAuth {
			return fmt.Errorf("usage %q is not a server's", u)
		}
	}
	b, _ := pem.Decode(csr.Spec.Request)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return fmt.Errorf("no PEM certificate request")
	}
	req, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return err
	}
	if err := req.CheckSignature(); err != nil {
		return err
	}
	if req.Subject.CommonName != csr.Spec.Username || !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		return fmt.Errorf("subject %s is not the node's", req.Subject)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 || len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return fmt.Errorf("names no address, or names email addresses or URIs")
	}
	for _, d := range req.DNSNames {
		if !slices.ContainsFunc(n.Status.Addresses, func(a corev1.NodeAddress) bool { return a.Address == d }) {
			return fmt.Errorf("name %s is not one of the node's", d)
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(n.Status.Addresses, func(a corev1.NodeAddress) bool {
			p := net.ParseIP(a.Address)
			return p != nil && p.Equal(ip)
		}) {
			return fmt.Errorf("address %s is not one of the node's", ip)
		}
	}
	return nil
}
