// Package bootstraptoken is how another host's node is allowed to join:
// Kubernetes' bootstrap tokens, as kubeadm designed them. A token
// "abcdef.0123456789abcdef" is a Secret kube-system/bootstrap-token-abcdef;
// kube-apiserver (--enable-bootstrap-token-auth) authenticates it as
// system:bootstrap:abcdef in the groups system:bootstrappers and Group, and
// the RBAC usernode applies at bootstrap lets those do exactly three
// things: read the cluster-info ConfigMap in kube-public, create a node
// client CSR, and have it approved. The controller-manager's
// bootstrapsigner signs cluster-info with each token (so a joiner holding
// the token can tell it was not tampered with) and its tokencleaner
// deletes expired tokens.
//
// The joiner trusts the cluster's CA only if its public key matches the
// pin in the join command (CAHash): the token alone proves nothing about
// the server.
package bootstraptoken

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Group is the extra group every usernode bootstrap token authenticates
// in; the node-bootstrap RBAC is bound to it.
const Group = "system:bootstrappers:usernode:default-node-token"

// The fixed names of Kubernetes' bootstrap-token machinery.
const (
	SecretType      = corev1.SecretType("bootstrap.kubernetes.io/token")
	SecretPrefix    = "bootstrap-token-"
	Namespace       = "kube-system"
	ClusterInfo     = "cluster-info"
	ClusterInfoNS   = "kube-public"
	DefaultTTL      = 24 * time.Hour
	idChars         = "abcdefghijklmnopqrstuvwxyz0123456789"
	idLen, secLen   = 6, 16
	descriptionNote = "made by `usernode token create`"
)

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// Token is one bootstrap token.
type Token struct {
	ID, Secret  string
	Expires     time.Time // zero: never
	Description string
}

// String is the token as a joiner gives it: ID.SECRET.
func (t Token) String() string { return t.ID + "." + t.Secret }

// New makes a random token that expires after ttl (0: never).
func New(ttl time.Duration, now time.Time) (Token, error) {
	id, err := randomString(idLen)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(secLen)
	if err != nil {
		return Token{}, err
	}
	t := Token{ID: id, Secret: secret, Description: descriptionNote}
	if ttl > 0 {
		t.Expires = now.Add(ttl).UTC().Truncate(time.Second)
	}
	return t, nil
}

// Parse reads "ID.SECRET", saying what is wrong with a bad one.
func Parse(s string) (Token, error) {
	m := tokenRE.FindStringSubmatch(s)
	if m == nil {
		return Token{}, fmt.Errorf("token %q is not a bootstrap token: it is 6 and 16 lower-case letters or digits joined by a dot (`usernode token create` prints one)", s)
	}
	return Token{ID: m[1], Secret: m[2]}, nil
}

func randomString(n int) (string, error) {
	var b strings.Builder
	n62 := big.NewInt(int64(len(idChars)))
	for range n {
		i, err := rand.Int(rand.Reader, n62)
		if err != nil {
			return "", err
		}
		b.WriteByte(idChars[i.Int64()])
	}
	return b.String(), nil
}

// Object is the token as kube-apiserver reads it: a Secret in kube-system.
func (t Token) Object() *corev1.Secret {
	data := map[string]string{
		"token-id":                       t.ID,
		"token-secret":                   t.Secret,
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              Group,
		"description":                    t.Description,
	}
	if !t.Expires.IsZero() {
		data["expiration"] = t.Expires.Format(time.RFC3339)
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: SecretPrefix + t.ID, Namespace: Namespace},
		Type:       SecretType,
		StringData: data,
	}
}

// FromSecret reads a token back from its Secret (whose data the API
// returns base64-decoded into Data).
func FromSecret(s *corev1.Secret) (Token, error) {
	if s.Type != SecretType {
		return Token{}, fmt.Errorf("secret %s is not a bootstrap token", s.Name)
	}
	t := Token{ID: string(s.Data["token-id"]), Secret: string(s.Data["token-secret"]), Description: string(s.Data["description"])}
	if e := string(s.Data["expiration"]); e != "" {
		exp, err := time.Parse(time.RFC3339, e)
		if err != nil {
			return Token{}, fmt.Errorf("secret %s: expiration %q: %w", s.Name, e, err)
		}
		t.Expires = exp
	}
	return t, nil
}

// CAHash is the pin of a CA certificate (PEM) as kubeadm writes it:
// "sha256:" and the hex SHA-256 of its SubjectPublicKeyInfo.
func CAHash(caPEM []byte) (string, error) {
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		return "", errors.New("CA certificate: no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("CA certificate: %w", err)
	}
	return CertHash(c), nil
}

// CertHash is CAHash of a parsed certificate.
func CertHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// JoinCommand is the line another host runs to join: the API endpoint it
// reaches, the token, and the CA pin.
func JoinCommand(server string, t Token, caHash string) string {
	return fmt.Sprintf("usernode join %s --token %s --ca-cert-hash %s", server, t, caHash)
}
