package crio

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/images"
	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/internal/version"
	"github.com/usernode/usernode/pkg/node/component"
)

// CRI registers CRI-O as a CRI runtime. It runs in both modes: measured
// (CRI-O 1.36.3, runc 1.1.5, this hybrid host without delegation) pods and
// containers run, their limits dropped with a warning, which is the point
// of having it beside containerd 2.x, which cannot run without delegation.
var CRI = component.Runtime{
	Name:     "crio",
	Daemon:   daemon,
	Endpoint: "unix://" + DefaultAddress,
	Probe:    Probe,
	New:      func() component.Component { return Component{} },
}

// Probe runs `crio --version`. Every release usernode configures runs in
// both modes; an older one is refused, since crio ignores keys it does
// not know.
func Probe(_ context.Context, bin string) (component.RuntimeInfo, error) {
	v, err := toolVersion(bin)
	if err != nil {
		return component.RuntimeInfo{}, err
	}
	if err := checkMin(bin, v); err != nil {
		return component.RuntimeInfo{}, err
	}
	return component.RuntimeInfo{Name: "crio", Version: v, Path: bin, Full: true, Degraded: true}, nil
}

// daemon is crio itself. No Debian release packages CRI-O, so it is built
// from the Go module proxy like Kubernetes (hack/build-crio.sh), and found
// where the built binaries are. 1.36 is the release this config is checked
// against (the proxy serves no 1.37).
var daemon = component.Tool{Name: "crio", Names: []string{"crio"}, Built: true, Build: build, Min: "1.36"}

// build makes crio and pinns into the build cache.
const build = "hack/build-crio.sh"

// pinns is built with crio, which refuses to start without it.
var pinns = component.Tool{Name: "pinns", Names: []string{"pinns"}, Built: true, Build: build}

// OCIRuntime is what CRI-O starts containers with: crun (CRI-O's default),
// else runc.
var OCIRuntime = component.Tool{Name: "oci-runtime", Names: []string{"crun", "runc"}, Debian: "crun", Fedora: "crun"}

// conmon is CRI-O's per-container monitor; skopeo imports the images.
var (
	conmon = component.Tool{Name: "conmon", Names: []string{"conmon"}, Debian: "conmon", Fedora: "conmon"}
	skopeo = component.Tool{Name: "skopeo", Names: []string{"skopeo"}, Debian: "skopeo", Fedora: "skopeo"}
)

// Component configures and runs CRI-O, and imports the node's images.
type Component struct{}

// Name is the supervisor's name for it.
func (Component) Name() string { return "crio" }

// Tools are crio and pinns, conmon, an OCI runtime and skopeo.
func (Component) Tools() []component.Tool {
	return []component.Tool{daemon, pinns, conmon, OCIRuntime, skopeo}
}

// Steps writes CRI-O's files for the node's mode and kernel, starts crio,
// then imports each image archive into its store.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	o, err := optionsFor(env)
	if err != nil {
		return nil, err
	}
	if err := writeFiles(env, o); err != nil {
		return nil, err
	}
	steps := []supervise.Step{{Name: "crio", Argv: Argv(env.Bin("crio"), o), Env: append(o.Env(), RootlessEnv),
		Ready: &supervise.Probe{Unix: o.Address()}, After: []string{}}}
	imports, err := importSteps(env, o)
	return append(steps, imports...), err
}

// optionsFor is what this node's CRI-O is told: the tools found, the
// node's mode, and the OCI runtime and storage this host can use.
func optionsFor(env *component.Env) (Options, error) {
	if err := checkVersion(env.Bin("crio")); err != nil {
		return Options{}, err
	}
	oci, err := chooseOCIRuntime(env.Bin("oci-runtime"), toolVersion, findRunc)
	if err != nil {
		return Options{}, err
	}
	driver, mount := chooseStorage(os.DirFS("/"), findFuseOverlayfs)
	o := Options{Degraded: env.Degraded, PauseImage: images.PauseRef, OCIRuntime: oci, Conmon: env.Bin("conmon"),
		Pinns: env.Bin("pinns"), StorageDriver: driver, MountProgram: mount, CNIBinDir: env.Bin("cni-plugins")}
	if err := o.Defaults(); err != nil {
		return Options{}, fmt.Errorf("CRI-O config: %w", err)
	}
	return o, nil
}

// writeFiles writes crio.conf and the containers libraries' files, and
// makes the directory for big temporary files: skopeo does not (measured:
// "creating temp directory: stat DIR: no such file or directory").
func writeFiles(env *component.Env, o Options) error {
	files, err := Render(o)
	if err != nil {
		return fmt.Errorf("CRI-O config: %w", err)
	}
	for p, b := range files {
		if err := env.WriteFile(p, b); err != nil {
			return err
		}
	}
	return os.MkdirAll(env.Path(o.TempDir()), 0o700)
}

// Argv runs crio with o's file only: --config-dir "" keeps out any
// /etc/crio/crio.conf.d of the host (the node's /etc is a copy of it),
// whose drop-ins crio would otherwise merge over crio.conf.
func Argv(bin string, o Options) []string {
	return []string{bin, "--config", o.ConfigPath(), "--config-dir", ""}
}

// importSteps copy each image archive into CRI-O's store with skopeo,
// under the name internal/images gave it. They run once crio serves:
// before that, crio checks the store and may wipe it (an unclean
// shutdown, an upgrade), which would take an image imported earlier.
// CRI-O's own PullImage cannot do it: it takes only registry names (in
// 1.36.3's source the name goes through short-name resolution and gets
// default_transport, docker://, in front; measured: `crictl pull
// oci-archive:/var/lib/usernode/images/busybox.tar` fails "cannot parse
// input: ...: invalid reference format").
func importSteps(env *component.Env, o Options) ([]supervise.Step, error) {
	var steps []supervise.Step
	for i, img := range env.Images {
		ref, err := ArchiveName(env.Path(img))
		if err != nil {
			return nil, err
		}
		steps = append(steps, supervise.Step{Name: component.ImportStep(i), Oneshot: true, Env: o.Env(), After: []string{"crio"},
			Argv: ImportArgv(env.Bin("skopeo"), o, img, ref)})
	}
	return steps, nil
}

// ImportArgv copies the OCI archive at archive into the store as ref.
func ImportArgv(skopeoBin string, o Options, archive, ref string) []string {
	return []string{skopeoBin, "--policy", o.PolicyPath(), "--tmpdir", o.TempDir(),
		"copy", "oci-archive:" + archive, "containers-storage:" + ref}
}

// nameAnnotation is where internal/images records an archive's image name
// (`ctr images import` reads it too); skopeo needs it as the destination.
const nameAnnotation = "io.containerd.image.name"

// ArchiveName is the image name recorded in an OCI archive's index.json.
func ArchiveName(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: no index.json: not an OCI archive from internal/images", path)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if h.Name == "index.json" {
			return indexName(path, tr)
		}
	}
}

func indexName(path string, r io.Reader) (string, error) {
	var index struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.NewDecoder(r).Decode(&index); err != nil {
		return "", fmt.Errorf("%s: index.json: %w", path, err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations[nameAnnotation] == "" {
		return "", fmt.Errorf("%s: index.json must hold one manifest annotated %s", path, nameAnnotation)
	}
	return index.Manifests[0].Annotations[nameAnnotation], nil
}

// checkVersion refuses a crio older than the config is written for:
// crio accepts unknown keys silently, so an older one would run with
// CRI-O's defaults where usernode set something.
func checkVersion(bin string) error {
	v, err := toolVersion(bin)
	if err != nil {
		return err
	}
	return checkMin(bin, v)
}

func checkMin(bin, v string) error {
	if version.Less(v, daemon.Min) {
		return fmt.Errorf("%s is CRI-O %s; usernode configures %s or newer: build it with hack/build-crio.sh", bin, v, daemon.Min)
	}
	return nil
}

// toolVersion is the version a program's --version prints.
func toolVersion(bin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v: %s", bin, err, strings.TrimSpace(string(out)))
	}
	v := version.Find(string(out))
	if v == "" {
		return "", fmt.Errorf("%s --version printed no version: %q", bin, out)
	}
	return v, nil
}

// MinCrun is the first crun that takes CRI-O 1.36's OCI runtime spec
// (1.3.0): older releases accept only an ociVersion containing "1.0" (crun
// PR #1417 dropped the check). Measured: Debian 12's crun 1.8.1 fails
// every pod sandbox with "container create failed: unknown version
// specified"; runc 1.1.5 runs them.
const MinCrun = "1.14.3"

// chooseOCIRuntime is found (crun or runc) unless it is a crun too old
// for CRI-O, then runc.
func chooseOCIRuntime(found string, ver func(string) (string, error), runc func() (string, bool)) (string, error) {
	if filepath.Base(found) != "crun" {
		return found, nil
	}
	v, err := ver(found)
	if err != nil {
		return "", err
	}
	if !version.Less(v, MinCrun) {
		return found, nil
	}
	if r, ok := runc(); ok {
		return r, nil
	}
	return "", fmt.Errorf("%s is crun %s, which rejects CRI-O's OCI spec 1.3 (\"unknown version specified\"): install crun %s or newer, or runc (Debian/Ubuntu: apt-get install runc)", found, v, MinCrun)
}

// findRunc looks where Debian puts runc, which a regular user's PATH
// often lacks.
func findRunc() (string, bool) { return findSystem("runc") }

func findSystem(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); isExecutable(p) {
			return p, true
		}
	}
	return "", false
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Storage drivers of containers/storage usernode configures.
const (
	// Overlay is native overlayfs or, with a mount program, fuse-overlayfs.
	// containers/storage adds userxattr itself in a user namespace
	// (measured: the mounts show redirect_dir=nofollow,userxattr).
	Overlay = "overlay"
	// VFS copies every layer in full: works everywhere, slow and large.
	VFS = "vfs"
)

// chooseStorage decides overlayfs the way doctor's kernel.overlay does:
// native when the kernel mounts it in a user namespace, else
// fuse-overlayfs when it is installed and /dev/fuse opens, else vfs (which
// doctor warns about, with the fix).
func chooseStorage(root fs.FS, fuse func() (string, error)) (driver, mountProgram string) {
	if len(overlayBlockers(root)) == 0 {
		return Overlay, ""
	}
	if p, err := fuse(); err == nil {
		return Overlay, p
	}
	return VFS, ""
}

// overlayBlockers are why the kernel will not mount overlayfs in a user
// namespace: older than 5.11, no overlay filesystem, SELinux enforcing.
func overlayBlockers(root fs.FS) []string {
	var why []string
	rel, _ := fs.ReadFile(root, "proc/sys/kernel/osrelease")
	if !kernelAtLeast(strings.TrimSpace(string(rel)), 5, 11) {
		why = append(why, fmt.Sprintf("kernel %q is older than 5.11", strings.TrimSpace(string(rel))))
	}
	if !hasOverlay(root, strings.TrimSpace(string(rel))) {
		why = append(why, "overlay is neither in /proc/filesystems nor a module of the kernel")
	}
	if b, err := fs.ReadFile(root, "sys/fs/selinux/enforce"); err == nil && strings.TrimSpace(string(b)) == "1" {
		why = append(why, "SELinux is enforcing")
	}
	return why
}

func kernelAtLeast(rel string, major, minor int) bool {
	v, err := version.Parse(rel)
	if err != nil {
		return false
	}
	return v.Major() > uint(major) || v.Major() == uint(major) && v.Minor() >= uint(minor)
}

// hasOverlay: registered, or a module the first mount loads (as doctor
// counts it).
func hasOverlay(root fs.FS, rel string) bool {
	fss, _ := fs.ReadFile(root, "proc/filesystems")
	for _, l := range strings.Split(string(fss), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == "overlay" {
			return true
		}
	}
	for _, list := range []string{"modules.dep", "modules.builtin"} {
		b, _ := fs.ReadFile(root, "lib/modules/"+rel+"/"+list)
		if strings.Contains(string(b), "/overlay.ko") {
			return true
		}
	}
	return false
}

// findFuseOverlayfs is fuse-overlayfs if it can run: installed, and
// /dev/fuse opens for the node's user (measured on this host: /dev/fuse
// 0600 fails every pod with "fuse: failed to open /dev/fuse: Permission
// denied"; doctor says chmod 0666 /dev/fuse).
func findFuseOverlayfs() (string, error) {
	p, ok := findSystem("fuse-overlayfs")
	if !ok {
		return "", errors.New("fuse-overlayfs is not installed")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	return p, f.Close()
}
