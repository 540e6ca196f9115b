// Package images builds container images locally as OCI archives, so a
// node comes up with no registry reachable: the pause image every pod needs
// is made from files already on the machine and imported into containerd.
package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/pause"
)

// File is one entry of the image's only layer.
type File struct {
	Path   string      // absolute path inside the image
	Mode   fs.FileMode // permission bits; fs.ModeDir or fs.ModeSymlink for those
	Source string      // host file to copy (regular files)
	Data   []byte      // or the content itself
	Link   string      // symlink target
}

// Image is what to build.
type Image struct {
	Ref        string // e.g. registry.k8s.io/pause:3.10
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string // the config's User, e.g. "1234"; empty: root
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// WriteArchive writes img as an OCI image layout in a tar stream, the
// format `ctr images import` reads. The layer is uncompressed: these images
// are imported locally, never pushed, and compressing only costs start time.
func WriteArchive(w io.Writer, img Image) error {
	// The layer is written twice, once to learn its digest and size (a
	// tar header needs the size first) and once into the archive, rather
	// than held in memory: the pause layer is usernode's whole binary.
	sum, n := sha256.New(), &counter{}
	files := sortedFiles(img.Files)
	if err := writeLayer(io.MultiWriter(sum, n), files); err != nil {
		return err
	}
	layerDesc := descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: "sha256:" + hex.EncodeToString(sum.Sum(nil)), Size: n.n}
	cfg, cfgDesc, manifest, manDesc := configAndManifest(img, layerDesc)
	tag := img.Ref
	if i := strings.LastIndex(tag, ":"); i > strings.LastIndex(tag, "/") {
		tag = tag[i+1:]
	}
	manDesc.Annotations = map[string]string{"io.containerd.image.name": img.Ref, "org.opencontainers.image.ref.name": tag}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []descriptor{manDesc},
	})

	tw := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, e := range []struct {
		name string
		b    []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(cfgDesc), cfg},
		{blobPath(manDesc), manifest},
	} {
		if err := put(e.name, e.b); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: blobPath(layerDesc), Mode: 0o644, Size: layerDesc.Size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if err := writeLayer(tw, files); err != nil {
		return err
	}
	return tw.Close()
}

// configAndManifest makes the image's config and manifest blobs for its
// one layer.
func configAndManifest(img Image, layerDesc descriptor) (cfg []byte, cfgDesc descriptor, manifest []byte, manDesc descriptor) {
	cfg, _ = json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       imageConfig(img),
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	cfgDesc = blobDesc("application/vnd.oci.image.config.v1+json", cfg)
	manifest, _ = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        cfgDesc,
		"layers":        []descriptor{layerDesc},
	})
	return cfg, cfgDesc, manifest, blobDesc("application/vnd.oci.image.manifest.v1+json", manifest)
}

// Blobs returns a small image's manifest and every blob by digest
// ("sha256:..."): the manifest, the config and the layer, held in memory,
// as a registry serves them (the same bytes WriteArchive writes).
func Blobs(img Image) (manifestDigest string, blobs map[string][]byte, err error) {
	var layer bytes.Buffer
	if err := writeLayer(&layer, sortedFiles(img.Files)); err != nil {
		return "", nil, err
	}
	layerDesc := blobDesc("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	cfg, cfgDesc, manifest, manDesc := configAndManifest(img, layerDesc)
	return manDesc.Digest, map[string][]byte{layerDesc.Digest: layer.Bytes(), cfgDesc.Digest: cfg, manDesc.Digest: manifest}, nil
}

// imageConfig is the image config's "config": User only when set, so the
// images made before it existed keep their digests.
func imageConfig(img Image) map[string]any {
	c := map[string]any{"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "Env": img.Env}
	if img.User != "" {
		c["User"] = img.User
	}
	return c
}

func blobDesc(mediaType string, b []byte) descriptor {
	sum := sha256.Sum256(b)
	return descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
}

func blobPath(d descriptor) string { return "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:") }

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func sortedFiles(files []File) []File {
	files = append([]File(nil), files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files
}

// writeLayer is deterministic (sorted, zero times, root-owned), so the same
// files always make the same image ID and a re-import is a no-op.
func writeLayer(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		name := strings.TrimPrefix(f.Path, "/")
		h := &tar.Header{Name: name, Mode: tarMode(f.Mode), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		var src io.Reader
		switch {
		case f.Mode&fs.ModeDir != 0:
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case f.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		case f.Source != "":
			in, err := os.Open(f.Source)
			if err != nil {
				return err
			}
			defer in.Close()
			fi, err := in.Stat()
			if err != nil {
				return err
			}
			h.Typeflag, h.Size, src = tar.TypeReg, fi.Size(), in
		default:
			h.Typeflag, h.Size, src = tar.TypeReg, int64(len(f.Data)), bytes.NewReader(f.Data)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if src != nil {
			if _, err := io.Copy(tw, src); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// tarMode is the permission bits with setuid, setgid and sticky, which
// fs.FileMode keeps outside Perm: the upstream e2e images have a setuid
// binary (nonewprivs) and a sticky /tmp.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// Static tells whether the ELF binary at path needs no dynamic loader, so
// it can run alone in an otherwise empty image.
func Static(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// PauseRef is the sandbox image name the generated containerd config uses.
const PauseRef = "registry.k8s.io/pause:3.10"

// Pause is the pod sandbox image: internal/pause's program for this
// architecture, a few hundred bytes (each pod's pause is its own process,
// so its size is paid once a pod). Where there is none, usernode's own
// binary, which acts as pause when started as /pause, if self is static;
// otherwise busybox-static's sleep. Either way no registry is needed.
func Pause(self string) (Image, error) { return pauseFor(runtime.GOARCH, self) }

func pauseFor(goarch, self string) (Image, error) {
	if p := pause.Program(goarch); p != nil {
		return Image{Ref: PauseRef, Entrypoint: []string{"/pause"}, Files: []File{{Path: "/pause", Mode: 0o755, Data: p}}}, nil
	}
	if ok, err := Static(self); err == nil && ok {
		return Image{Ref: PauseRef, Entrypoint: []string{"/pause"}, Files: []File{{Path: "/pause", Mode: 0o755, Source: self}}}, nil
	}
	bb, err := findBusybox()
	if err != nil {
		return Image{}, fmt.Errorf("no static binary for the pause image: build usernode with CGO_ENABLED=0 (make build does), or install busybox-static: %w", err)
	}
	return Image{Ref: PauseRef, Entrypoint: []string{"/bin/sleep", "infinity"}, Files: []File{
		{Path: "/bin", Mode: fs.ModeDir | 0o755}, {Path: "/bin/busybox", Mode: 0o755, Source: bb},
		{Path: "/bin/sleep", Mode: fs.ModeSymlink | 0o777, Link: "busybox"},
	}}, nil
}

// SmallPause tells whether Pause makes the image from internal/pause's
// program; false means each pod runs a whole usernode (or busybox) as its
// pause, which the node says in its log.
func SmallPause() bool { return pause.Program(runtime.GOARCH) != nil }

// Busybox is a small userland image for tests and debugging, from Debian's
// busybox-static.
func Busybox(ref string) (Image, error) {
	bb, err := findBusybox()
	if err != nil {
		return Image{}, err
	}
	files := []File{{Path: "/bin", Mode: fs.ModeDir | 0o755}, {Path: "/bin/busybox", Mode: 0o755, Source: bb},
		{Path: "/tmp", Mode: fs.ModeDir | 0o777}, {Path: "/etc", Mode: fs.ModeDir | 0o755}, {Path: "/var/www", Mode: fs.ModeDir | 0o755}}
	for _, app := range []string{"sh", "ls", "cat", "echo", "sleep", "wget", "httpd", "nslookup", "id", "ps", "env", "hostname", "dd", "head", "nc", "true", "mkdir", "ip"} {
		files = append(files, File{Path: "/bin/" + app, Mode: fs.ModeSymlink | 0o777, Link: "busybox"})
	}
	return Image{Ref: ref, Files: files, Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}}, nil
}

func findBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if ok, err := Static(p); err == nil && ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox found (Debian/Ubuntu: apt-get install busybox-static)")
}
