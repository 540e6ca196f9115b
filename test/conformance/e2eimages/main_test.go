package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usernode/usernode/internal/images"
)

// The fake registry's layout is the one agnhost's fake-registry-server
// reads: the tag file holds the manifest's digest, and the manifest, its
// config and its layer are found at sha256/XX/HASH/data under manifests/
// and blobs/.
func TestFakeRegistryLayout(t *testing.T) {
	list := filepath.Join(t.TempDir(), "images.txt")
	if err := os.WriteFile(list, []byte("# comment\npause 3.10.2 testing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pause := images.Image{Ref: "x", Entrypoint: []string{"/pause"}, Files: []images.File{{Path: "/pause", Mode: 0o755, Data: []byte("ELF")}}}
	tr := tree{}
	if err := fakeRegistry(tr, list, pause); err != nil {
		t.Fatal(err)
	}
	data := func(p string) []byte {
		t.Helper()
		f, ok := tr[p]
		if !ok {
			t.Fatalf("no %s in the image; have %v", p, keys(tr))
		}
		return f.Data
	}
	path := func(kind, digest string) string {
		h := strings.TrimPrefix(digest, "sha256:")
		return "/var/registry/pause/" + kind + "/sha256/" + h[:2] + "/" + h + "/data"
	}
	digest := strings.TrimSpace(string(data("/var/registry/pause/manifests/testing")))
	var m struct {
		MediaType string `json:"mediaType"`
		Config    struct{ Digest string }
		Layers    []struct{ Digest string }
	}
	if err := json.Unmarshal(data(path("manifests", digest)), &m); err != nil {
		t.Fatal(err)
	}
	// The server sets Content-Type from mediaType: without it a client
	// cannot tell a manifest from an index.
	if m.MediaType == "" || len(m.Layers) != 1 {
		t.Fatalf("manifest %+v", m)
	}
	data(path("blobs", m.Config.Digest))
	data(path("blobs", m.Layers[0].Digest))
	// Every parent directory is an entry of its own.
	for p := range tr {
		if d := filepath.Dir(p); d != "/" {
			if f, ok := tr[d]; !ok || f.Mode&fs.ModeDir == 0 {
				t.Errorf("%s: parent %s is not a directory entry", p, d)
			}
		}
	}
}

// A list naming an image that cannot be built here is refused, by name.
func TestFakeRegistryRefusesOtherImages(t *testing.T) {
	list := filepath.Join(t.TempDir(), "images.txt")
	if err := os.WriteFile(list, []byte("nginx 1.27 testing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := fakeRegistry(tree{}, list, images.Image{})
	if err == nil || !strings.Contains(err.Error(), "nginx") {
		t.Fatalf("err = %v, want one naming nginx", err)
	}
}

func keys(t tree) []string {
	var out []string
	for k := range t {
		out = append(out, k)
	}
	return out
}
