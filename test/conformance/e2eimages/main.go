// Command e2eimages builds, as OCI archives, the container images the
// upstream conformance tests run (hack/conformance.sh imports them into the
// node): no registry is reachable here, so registry.k8s.io's images are
// rebuilt from files already on this machine under the names the e2e
// manifest gives them.
//
//   - busybox: Debian's busybox-static with every applet it has, but with
//     bash-static as /bin/sh: Debian 12's busybox 1.35 ash (and dash) drop
//     environment variables whose names are not shell identifiers
//     ("data-1", which envFrom makes from a ConfigMap's keys), and tests
//     run `sh -c env` to find them; upstream's busybox 1.37 passes them on,
//     and so does bash.
//   - agnhost: upstream's agnhost binary (hack/build-e2e.sh builds it at the
//     cluster's version) plus the tools tests call in it. Upstream's image is
//     Alpine with bind-tools, curl, netcat-openbsd, iproute2 and bash; here
//     the same tools are Debian's binaries with the shared libraries they
//     load, and /bin/sh is bash-static: busybox's sh runs its own applets
//     before PATH, and its nc lacks the -v and -t the tests pass. Its
//     /var/registry (what `agnhost fake-registry-server` serves; upstream
//     fills it with crane from registry.k8s.io at image build time) holds
//     the pause image below under each name fakeregistryserver/images.txt
//     lists.
//   - glibc-dns-testing: upstream's is Debian with dnsutils; here the same
//     Debian tools (dig, hostname, getent).
//   - nonewprivs: upstream's nnp program (prints its effective uid),
//     setuid root, over busybox.
//   - nonroot: upstream's is a Debian base with USER 1234; here the busybox
//     image with that user (tests run `id -u` in it).
//   - pause: usernode's own pause image under the tag the tests name.
//
// Usage: e2eimages -out DIR -agnhost PATH -nnp PATH [-agnhost-src DIR]
// [-self PATH] [-busybox-ref REF,...] [-agnhost-ref ...] [-glibc-ref ...]
// [-nonewprivs-ref ...] [-nonroot-ref ...] [-pause-ref ...]
// It prints each archive's path, one a line.
package main

import (
	"debug/elf"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/usernode/usernode/internal/images"
)

// The names the v1.37.2 e2e manifest (test/utils/image/manifest.go) gives
// them; hack/conformance.sh passes the ones `e2e.test --list-images` prints.
var (
	busyboxRef = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	agnhostRef = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	glibcRef   = "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1"
	nnpRef     = "registry.k8s.io/e2e-test-images/nonewprivs:1.4"
	nonrootRef = "registry.k8s.io/e2e-test-images/nonroot:1.5"
	pauseRef   = "registry.k8s.io/pause:3.10.2"
)

// debianTools are the Debian binaries put in the agnhost and
// glibc-dns-testing images, each under the name tests call. Missing ones
// are an error naming the package.
var debianTools = []struct{ name, path, pkg string }{
	{"curl", "/usr/bin/curl", "curl"},
	{"dig", "/usr/bin/dig", "bind9-dnsutils"},
	{"nslookup", "/usr/bin/nslookup", "bind9-dnsutils"},
	{"nc", "/usr/bin/nc.openbsd", "netcat-openbsd"},
	{"getent", "/usr/bin/getent", "libc-bin"},
	{"hostname", "/usr/bin/hostname", "hostname"},
	{"ip", "/usr/sbin/ip", "iproute2"},
	{"ss", "/usr/bin/ss", "iproute2"},
	{"socat", "/usr/bin/socat", "socat"},
	{"ipcs", "/usr/bin/ipcs", "util-linux"},
}

// libDirs is where the dynamic loader looks when there is no ld.so.cache
// (Debian's multiarch dirs are compiled in), and so where libraries are
// searched for and put.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
	"/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"}

// bashStatic is every image's /bin/sh (see the package comment).
const bashStatic = "/bin/bash-static"

// pathEnv is the images' PATH, upstream's.
const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func main() {
	out := flag.String("out", "", "directory for the archives")
	agnhost := flag.String("agnhost", "", "the agnhost binary (hack/build-e2e.sh)")
	nnp := flag.String("nnp", "", "the nonewprivs image's nnp binary (hack/build-e2e.sh)")
	agnhostSrc := flag.String("agnhost-src", "", "k8s.io/kubernetes's test/images/agnhost, for porter's certificate (optional)")
	self := flag.String("self", "", "a static usernode binary, the pause program's fallback (default: this program)")
	flag.StringVar(&busyboxRef, "busybox-ref", busyboxRef, "the busybox image's names, comma-separated")
	flag.StringVar(&agnhostRef, "agnhost-ref", agnhostRef, "the agnhost image's names, comma-separated")
	flag.StringVar(&glibcRef, "glibc-ref", glibcRef, "the glibc-dns-testing image's names, comma-separated")
	flag.StringVar(&nnpRef, "nonewprivs-ref", nnpRef, "the nonewprivs image's names, comma-separated")
	flag.StringVar(&nonrootRef, "nonroot-ref", nonrootRef, "the nonroot image's names, comma-separated")
	flag.StringVar(&pauseRef, "pause-ref", pauseRef, "the pause image's names, comma-separated")
	flag.Parse()
	if *out == "" || *agnhost == "" || *nnp == "" {
		fmt.Fprintln(os.Stderr, "usage: e2eimages -out DIR -agnhost PATH -nnp PATH [-agnhost-src DIR] [-self PATH] [-busybox-ref REF,...] ...")
		os.Exit(2)
	}
	if *self == "" {
		*self, _ = os.Executable()
	}
	if err := run(*out, *agnhost, *nnp, *agnhostSrc, *self); err != nil {
		fmt.Fprintln(os.Stderr, "e2eimages:", err)
		os.Exit(1)
	}
}

func run(out, agnhost, nnp, agnhostSrc, self string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	bb, err := busybox()
	if err != nil {
		return err
	}
	pause, err := images.Pause(self)
	if err != nil {
		return err
	}
	ag, err := agnhostImage(agnhost, agnhostSrc, bb, pause)
	if err != nil {
		return err
	}
	glibc, err := glibcImage(bb)
	if err != nil {
		return err
	}
	nonewprivs, err := nnpImage(nnp, bb)
	if err != nil {
		return err
	}
	nonroot := bb
	nonroot.User = "1234"
	// The manifest lists some images under more than one tag (busybox
	// 1.36.1-1 and 1.37.0-2, agnhost 2.55 and 2.66.1). One archive an
	// image, under its first name; tags.txt lists "NAME OTHER" for each
	// other name, which hack/conformance.sh tags after the import (the same
	// content: no second copy on disk).
	var tags []string
	for _, e := range []struct {
		img  images.Image
		refs string
	}{{bb, busyboxRef}, {ag, agnhostRef}, {glibc, glibcRef}, {nonewprivs, nnpRef}, {nonroot, nonrootRef}, {pause, pauseRef}} {
		refs := strings.Split(e.refs, ",")
		img := e.img
		img.Ref = refs[0]
		p := filepath.Join(out, strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref)+".tar")
		if err := write(p, img); err != nil {
			return fmt.Errorf("%s: %w", img.Ref, err)
		}
		fmt.Println(p)
		for _, r := range refs[1:] {
			tags = append(tags, img.Ref+" "+r+"\n")
		}
	}
	return os.WriteFile(filepath.Join(out, "tags.txt"), []byte(strings.Join(tags, "")), 0o644)
}

func write(path string, img images.Image) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = images.WriteArchive(f, img)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp) // the write's error is the one to report
	}
	return err
}

// tree collects an image's files and makes every parent directory an entry
// of its own (the layer is applied as written).
type tree map[string]images.File

func (t tree) dir(p string) {
	for ; p != "/" && p != "."; p = filepath.Dir(p) {
		if _, ok := t[p]; !ok {
			t[p] = images.File{Path: p, Mode: fs.ModeDir | 0o755}
		}
	}
}

func (t tree) add(f images.File) {
	t.dir(filepath.Dir(f.Path))
	t[f.Path] = f
}

func (t tree) files() []images.File {
	var out []images.File
	for _, f := range t {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// etc is the accounts of the upstream images: busybox's root and nobody,
// and agnhost's user-defined-in-image (uid 1000) in group-defined-in-image
// (gid 50000), which a SupplementalGroups test looks for.
func etc(t tree, agnhost bool) {
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
	group := "root:x:0:\nnobody:x:65534:\n"
	if agnhost {
		passwd += "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n"
		group += "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n"
	}
	t.add(images.File{Path: "/etc/passwd", Mode: 0o644, Data: []byte(passwd)})
	t.add(images.File{Path: "/etc/group", Mode: 0o644, Data: []byte(group)})
	t.add(images.File{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777})
	t.add(images.File{Path: "/root", Mode: fs.ModeDir | 0o700})
}

// busybox is Debian's static busybox with a link for each applet it lists.
func busybox() (images.Image, error) {
	bin, err := staticBusybox()
	if err != nil {
		return images.Image{}, err
	}
	apps, err := applets(bin)
	if err != nil {
		return images.Image{}, err
	}
	if _, err := os.Stat(bashStatic); err != nil {
		return images.Image{}, fmt.Errorf("%w (apt-get install bash-static)", err)
	}
	t := tree{}
	t.add(images.File{Path: "/bin/busybox", Mode: 0o755, Source: bin})
	for _, a := range apps {
		if a != "busybox" && a != "sh" && a != "bash" {
			t.add(images.File{Path: "/bin/" + a, Mode: fs.ModeSymlink | 0o777, Link: "busybox"})
		}
	}
	t.add(images.File{Path: "/bin/bash", Mode: 0o755, Source: bashStatic})
	t.add(images.File{Path: "/bin/sh", Mode: fs.ModeSymlink | 0o777, Link: "bash"})
	etc(t, false)
	return images.Image{Ref: busyboxRef, Files: t.files(), Cmd: []string{"sh"}, Env: []string{pathEnv}}, nil
}

func staticBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if ok, err := images.Static(p); err == nil && ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox (apt-get install busybox-static)")
}

func applets(bin string) ([]string, error) {
	b, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	return strings.Fields(string(b)), nil
}

// agnhostImage lays out upstream's image: /agnhost (entrypoint, `pause` by
// default), /agnhost-2, /uploads, porter's certificate, the tools in
// /usr/bin and busybox's applets in /bin for every other command.
// agnhostImage lays out upstream's image: /agnhost (entrypoint, `pause` by
// default), /agnhost-2, /uploads, porter's certificate, the Debian tools
// and busybox's applets for every other command.
func agnhostImage(agnhost, src string, bb, pause images.Image) (images.Image, error) {
	if ok, err := images.Static(agnhost); err != nil || !ok {
		return images.Image{}, fmt.Errorf("%s is not a static binary (%v): build it with hack/build-e2e.sh", agnhost, err)
	}
	t := tree{}
	t.add(images.File{Path: "/agnhost", Mode: 0o755, Source: agnhost})
	t.add(images.File{Path: "/agnhost-2", Mode: fs.ModeSymlink | 0o777, Link: "agnhost"})
	t.add(images.File{Path: "/uploads", Mode: fs.ModeDir | 0o755})
	if src != "" {
		for _, f := range []string{"localhost.crt", "localhost.key"} {
			p := filepath.Join(src, "porter", f)
			if _, err := os.Stat(p); err != nil {
				return images.Image{}, err
			}
			t.add(images.File{Path: "/" + f, Mode: 0o644, Source: p})
		}
		if err := fakeRegistry(t, filepath.Join(src, "fakeregistryserver", "images.txt"), pause); err != nil {
			return images.Image{}, err
		}
	}
	etc(t, true)
	if err := withDebianTools(t, bb); err != nil {
		return images.Image{}, err
	}
	return images.Image{Ref: agnhostRef, Files: t.files(), Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: []string{pathEnv}}, nil
}

// fakeRegistry lays out /var/registry as upstream's prepare_registry.sh
// does (NAME/manifests/TAG holds the manifest's digest; manifests and
// blobs at NAME/{manifests,blobs}/sha256/XX/HASH/data), for each "NAME TAG
// INTERNAL_TAG" line of images.txt. Only pause can be made here: it is the
// one upstream lists (the private-registry pull tests pull it).
func fakeRegistry(t tree, list string, pause images.Image) error {
	b, err := os.ReadFile(list)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] != "pause" {
			return fmt.Errorf("%s lists %s: only pause can be built here", list, f[0])
		}
		manifest, blobs, err := images.Blobs(pause)
		if err != nil {
			return err
		}
		dir := "/var/registry/" + f[0]
		t.add(images.File{Path: dir + "/manifests/" + f[2], Mode: 0o644, Data: []byte(manifest + "\n")})
		for digest, data := range blobs {
			kind := "blobs"
			if digest == manifest {
				kind = "manifests"
			}
			hash := strings.TrimPrefix(digest, "sha256:")
			t.add(images.File{Path: fmt.Sprintf("%s/%s/sha256/%s/%s/data", dir, kind, hash[:2], hash), Mode: 0o644, Data: data})
		}
	}
	return nil
}

// glibcImage stands in for upstream's Debian image with dnsutils: tests
// run sh, hostname, dig and getent in it, against glibc's resolver.
func glibcImage(bb images.Image) (images.Image, error) {
	t := tree{}
	etc(t, false)
	if err := withDebianTools(t, bb); err != nil {
		return images.Image{}, err
	}
	return images.Image{Ref: glibcRef, Files: t.files(), Cmd: []string{"sh"}, Env: []string{pathEnv}}, nil
}

// nnpImage is upstream's: busybox with nnp setuid root, which prints its
// effective uid (0 when privilege escalation is allowed).
func nnpImage(nnp string, bb images.Image) (images.Image, error) {
	if ok, err := images.Static(nnp); err != nil || !ok {
		return images.Image{}, fmt.Errorf("%s is not a static binary (%v): build it with hack/build-e2e.sh", nnp, err)
	}
	t := tree{}
	for _, f := range bb.Files {
		t.add(f)
	}
	t.add(images.File{Path: "/usr/local/bin/nnp", Mode: fs.ModeSetuid | 0o755, Source: nnp})
	return images.Image{Ref: nnpRef, Files: t.files(), Cmd: []string{"nnp"}, Env: []string{pathEnv}}, nil
}

// withDebianTools adds debianTools with the libraries they load, an
// nsswitch.conf, and the busybox image's /bin (bash as sh, busybox's
// applets) for every other command.
func withDebianTools(t tree, bb images.Image) error {
	t.add(images.File{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("passwd: files\ngroup: files\nhosts: files dns\n")})
	tools := map[string]bool{}
	libs := map[string]bool{}
	for _, tool := range debianTools {
		if _, err := os.Stat(tool.path); err != nil {
			return fmt.Errorf("%s for the e2e images: %w (apt-get install %s)", tool.name, err, tool.pkg)
		}
		t.add(images.File{Path: "/usr/bin/" + tool.name, Mode: 0o755, Source: tool.path})
		tools[tool.name] = true
		if err := needed(tool.path, libs); err != nil {
			return fmt.Errorf("%s: %w", tool.path, err)
		}
	}
	for l := range libs {
		t.add(images.File{Path: l, Mode: 0o755, Source: l})
	}
	// busybox's /bin (its applets, bash as sh) for every other command.
	for _, f := range bb.Files {
		if strings.HasPrefix(f.Path, "/bin/") && !tools[filepath.Base(f.Path)] {
			t.add(f)
		}
	}
	return nil
}

// needed adds to libs the loader and every shared library the ELF file at
// path loads, transitively, each at the path it was found (copied, not
// linked: the host's /lib is a link to /usr/lib, the image's a directory).
func needed(path string, libs map[string]bool) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return err
			}
			libs[strings.TrimRight(string(b), "\x00")] = true
		}
	}
	names, err := f.ImportedLibraries()
	if err != nil {
		return err
	}
	for _, n := range names {
		p, err := findLib(n)
		if err != nil {
			return err
		}
		if libs[p] {
			continue
		}
		libs[p] = true
		if err := needed(p, libs); err != nil {
			return err
		}
	}
	return nil
}

func findLib(name string) (string, error) {
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("shared library %s not found in %v", name, libDirs)
}
