package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/usernode/usernode/internal/pause"
)

func readTar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		key := h.Name
		if h.Typeflag == tar.TypeSymlink {
			data = []byte("-> " + h.Linkname)
		}
		out[key] = data
	}
}

// The archive is a valid OCI layout: every digest matches its blob, the
// name containerd imports it under is annotated, and the layer holds the
// files asked for.
func TestWriteArchive(t *testing.T) {
	src := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(src, []byte("ELF..."), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Ref: "registry.k8s.io/pause:3.10", Entrypoint: []string{"/pause"}, Files: []File{
		{Path: "/pause", Mode: 0o755, Source: src},
		{Path: "/bin", Mode: fs.ModeDir | 0o755},
		{Path: "/bin/sh", Mode: fs.ModeSymlink | 0o777, Link: "busybox"},
	}}
	var a, b bytes.Buffer
	if err := WriteArchive(&a, img); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two builds of the same image differ; image IDs would churn")
	}
	files := readTar(t, a.Bytes())
	blob := func(digest string) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+digest[len("sha256:"):]]
		if !ok {
			t.Fatalf("no blob %s", digest)
		}
		sum := sha256.Sum256(b)
		if "sha256:"+hex.EncodeToString(sum[:]) != digest {
			t.Fatalf("blob %s has another digest", digest)
		}
		return b
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != img.Ref || index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "3.10" {
		t.Fatalf("index = %s", files["index.json"])
	}
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &man); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Config struct{ Entrypoint []string }
		Rootfs struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/pause" || cfg.Rootfs.DiffIDs[0] != man.Layers[0].Digest {
		t.Errorf("config = %+v", cfg)
	}
	layer := readTar(t, blob(man.Layers[0].Digest))
	if string(layer["pause"]) != "ELF..." || string(layer["bin/sh"]) != "-> busybox" {
		t.Errorf("layer = %v", layer)
	}
	if _, ok := layer["bin/"]; !ok {
		t.Errorf("layer lacks bin/: %v", layer)
	}
}

// Where internal/pause has a program, it is the whole image: usernode's
// own binary is not in it.
func TestPauseIsTheSmallProgram(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := pauseFor(arch, "/proc/self/exe")
		if err != nil || len(img.Files) != 1 || img.Files[0].Source != "" || !bytes.Equal(img.Files[0].Data, pause.Program(arch)) ||
			img.Entrypoint[0] != "/pause" {
			t.Errorf("%s: %+v, %v", arch, img, err)
		}
	}
}

// Elsewhere, usernode's own binary when it is static (it has a /pause
// entry), else busybox's sleep.
func TestPauseFallsBack(t *testing.T) {
	self, err := os.Executable() // the test binary: static or not, per the build
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := Static(self); ok {
		img, err := pauseFor("riscv64", self)
		if err != nil || img.Files[0].Source != self {
			t.Errorf("static self: %+v, %v", img, err)
		}
	}
	dyn := "/bin/ls" // dynamically linked on every distribution we run on
	img, err := pauseFor("riscv64", dyn)
	if _, bbErr := findBusybox(); bbErr != nil {
		if err == nil {
			t.Fatal("want an error naming busybox-static when neither is static")
		}
		return
	}
	if err != nil || img.Entrypoint[0] != "/bin/sleep" {
		t.Errorf("Pause(%s) = %+v, %v", dyn, img, err)
	}
}

// Setuid, setgid and sticky survive into the layer: the e2e nonewprivs
// image's binary is setuid root and /tmp is sticky.
func TestLayerKeepsSpecialBits(t *testing.T) {
	var buf bytes.Buffer
	files := []File{
		{Path: "/nnp", Mode: fs.ModeSetuid | 0o755, Data: []byte("x")},
		{Path: "/g", Mode: fs.ModeSetgid | 0o755, Data: []byte("x")},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "/plain", Mode: 0o644, Data: []byte("x")},
	}
	if err := writeLayer(&buf, sortedFiles(files)); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"nnp": 0o4755, "g": 0o2755, "tmp/": 0o1777, "plain": 0o644}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Mode != want[h.Name] {
			t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, want[h.Name])
		}
		delete(want, h.Name)
	}
	if len(want) != 0 {
		t.Errorf("missing from the layer: %v", want)
	}
}

// Blobs serves what WriteArchive writes: each digest is its content's, the
// manifest names the config and the layer, and the manifest is the one the
// archive's index points at. The config carries User when set.
func TestBlobs(t *testing.T) {
	img := Image{Ref: "localhost:5000/pause:testing", User: "1234", Entrypoint: []string{"/pause"},
		Files: []File{{Path: "/pause", Mode: 0o755, Data: []byte("ELF...")}}}
	man, blobs, err := Blobs(img)
	if err != nil {
		t.Fatal(err)
	}
	for d, b := range blobs {
		sum := sha256.Sum256(b)
		if "sha256:"+hex.EncodeToString(sum[:]) != d {
			t.Errorf("blob %s has another digest", d)
		}
	}
	var m struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blobs[man], &m); err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 3 || blobs[m.Config.Digest] == nil || len(m.Layers) != 1 || blobs[m.Layers[0].Digest] == nil {
		t.Fatalf("manifest %s, blobs %d", blobs[man], len(blobs))
	}
	var cfg struct{ Config struct{ User string } }
	if err := json.Unmarshal(blobs[m.Config.Digest], &cfg); err != nil || cfg.Config.User != "1234" {
		t.Errorf("config %s: User %q, want 1234 (%v)", blobs[m.Config.Digest], cfg.Config.User, err)
	}
	var a bytes.Buffer
	if err := WriteArchive(&a, img); err != nil {
		t.Fatal(err)
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(readTar(t, a.Bytes())["index.json"], &index); err != nil || index.Manifests[0].Digest != man {
		t.Errorf("archive's manifest %v, Blobs' %s (%v)", index.Manifests, man, err)
	}
}
