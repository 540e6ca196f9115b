package join

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/pkg/bootstraptoken"
)

// sign makes a detached JWS as the bootstrapsigner does (go-jose, HS256,
// kid the token ID).
func sign(payload []byte, id, secret string) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"` + id + `"}`))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(h + "." + base64.RawURLEncoding.EncodeToString(payload)))
	return h + ".." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func TestVerifyDetachedJWS(t *testing.T) {
	tok := bootstraptoken.Token{ID: "abcdef", Secret: "0123456789abcdef"}
	kc := []byte("apiVersion: v1\nkind: Config\n")
	if err := verifyDetachedJWS(sign(kc, tok.ID, tok.Secret), kc, tok); err != nil {
		t.Fatal(err)
	}
	for name, jws := range map[string]string{
		"other secret":  sign(kc, tok.ID, "ffffffffffffffff"),
		"other token":   sign(kc, "zzzzzz", tok.Secret),
		"other payload": sign([]byte("apiVersion: v2"), tok.ID, tok.Secret),
		"not detached":  strings.Replace(sign(kc, tok.ID, tok.Secret), "..", ".eA.", 1),
		"garbage":       "x",
	} {
		if err := verifyDetachedJWS(jws, kc, tok); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// Bad input is refused before anything is dialled.
func TestDiscoverBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok := bootstraptoken.Token{ID: "abcdef", Secret: "0123456789abcdef"}
	pin := "sha256:" + strings.Repeat("0", 64)
	for server, want := range map[string]string{"198.51.100.1:6443": "https://HOST:PORT", "http://198.51.100.1:6443": "https://HOST:PORT", "https://198.51.100.1": "https://HOST:PORT"} {
		if _, err := Discover(ctx, server, tok, pin); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", server, err)
		}
	}
	if _, err := Discover(ctx, "https://127.0.0.1:1", tok, "sha256:abc"); err == nil || !strings.Contains(err.Error(), "--ca-cert-hash") {
		t.Errorf("short pin: %v", err)
	}
}
