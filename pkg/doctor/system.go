package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/procenv"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node/component"

	"golang.org/x/sys/unix"

	"github.com/usernode/usernode/internal/hostnet"
	"github.com/usernode/usernode/internal/userns"
)

// FileInfo is the part of stat(2) the checks use. It is a plain struct so
// that unit tests can describe setuid helpers, sockets and device nodes that
// a fixture tree checked into git cannot hold.
type FileInfo struct {
	Mode fs.FileMode
	UID  int
}

// System is everything the checks read. Files are read below Root, so unit
// tests point it at a fixture tree; the function fields are the probes that
// need the live kernel (opening a device, running a binary, creating
// namespaces) and are replaced in unit tests.
type System struct {
	// Root prefixes every absolute path the checks read; "" is the host.
	Root string
	UID  int
	User string
	// Executable is usernode's own path, named in the AppArmor profile.
	Executable string
	Env        func(string) string

	// Stat follows symlinks. The path is as seen on the host, without Root.
	Stat func(path string) (FileInfo, error)
	// OpenRW opens path read-write as the calling user and closes it.
	OpenRW func(path string) error
	// FileCaps reports whether path carries a security.capability xattr.
	FileCaps func(path string) (bool, error)
	// Exec runs a binary with fixed arguments and returns its output.
	Exec func(ctx context.Context, path string, args ...string) (string, error)
	// Trial creates the node's namespaces once; nil when this build has no
	// trial.
	Trial func(ctx context.Context) error
	// VXLANTrial makes a VXLAN device on port in such namespaces.
	VXLANTrial func(ctx context.Context, port uint16) error
	// Uplink is the host's default route (hostnet.DefaultRoute).
	Uplink func() (hostnet.Uplink, bool)
	// PortFree says whether the port can be bound (nil error).
	PortFree func(proto string, addr netip.AddrPort) error
	// FindRuntime finds a CRI runtime's tools and asks its daemon what it
	// is (FindRuntimeWith); nil skips binary.cri.
	FindRuntime func(ctx context.Context, rt component.Runtime) RuntimeProbe
	// CRI is the runtime the user's model names (config.yaml's cri,
	// --cri), which binary.cri judges the host by.
	CRI string
}

// Host describes the running system as the calling user.
func Host() (*System, error) {
	uid := os.Getuid()
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	exe, _ := os.Executable()
	s := &System{UID: uid, User: name, Executable: exe, Env: os.Getenv, Trial: userns.Trial, VXLANTrial: userns.TrialVXLAN,
		Uplink: hostnet.DefaultRoute, PortFree: portFree}
	s.Stat = s.hostStat
	s.OpenRW = func(p string) error {
		f, err := os.OpenFile(s.path(p), os.O_RDWR, 0)
		if err != nil {
			return err
		}
		return f.Close()
	}
	s.FileCaps = func(p string) (bool, error) {
		_, err := unix.Getxattr(s.path(p), "security.capability", nil)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
			return false, nil
		}
		return false, err
	}
	s.Exec = hostExec
	s.UseModel(&cluster.Config{CRI: cluster.DefaultCRI})
	return s, nil
}

// portFree binds the port for a moment.
func portFree(proto string, addr netip.AddrPort) error {
	if proto == "udp" {
		c, err := net.ListenPacket("udp", addr.String())
		if err != nil {
			return err
		}
		return c.Close()
	}
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		return err
	}
	return l.Close()
}

func (s *System) hostStat(p string) (FileInfo, error) {
	var st unix.Stat_t
	if err := unix.Stat(s.path(p), &st); err != nil {
		return FileInfo{}, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	return FileInfo{Mode: unixMode(st.Mode), UID: int(st.Uid)}, nil
}

func unixMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// hostExec bounds every version probe: a wedged binary must not hang doctor.
func hostExec(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	c := exec.CommandContext(ctx, path, args...)
	c.Stdout, c.Stderr = &out, &out
	c.Env = []string{"PATH=" + procenv.Path, "LANG=C"}
	err := c.Run()
	return out.String(), err
}

// path maps a host path into Root.
func (s *System) path(p string) string {
	if s.Root == "" {
		return p
	}
	return filepath.Join(s.Root, p)
}

func (s *System) getenv(k string) string {
	if s.Env == nil {
		return ""
	}
	return s.Env(k)
}

func (s *System) readFile(p string) ([]byte, error) { return os.ReadFile(s.path(p)) }

// readTrim reads a one-line file such as a sysctl.
func (s *System) readTrim(p string) (string, error) {
	b, err := s.readFile(p)
	return strings.TrimSpace(string(b)), err
}

func (s *System) exists(p string) bool {
	_, err := s.Stat(p)
	return err == nil
}

// searchDirs are where distributions install the binaries doctor looks
// for; sbin dirs matter because a user's PATH often lacks them.
var searchDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// LookPath finds an executable in $PATH and the usual bin dirs, below Root.
// It returns the host path.
func (s *System) LookPath(name string) (string, bool) {
	dirs := filepath.SplitList(s.getenv("PATH"))
	return s.lookIn(name, append(dirs, searchDirs...))
}

func (s *System) lookIn(name string, dirs []string) (string, bool) {
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, name)
		fi, err := s.Stat(p)
		if err == nil && fi.Mode.IsRegular() && fi.Mode&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// osFamily names the distribution family from os-release, so --fix can
// pick the right package manager.
func (s *System) osFamily() string {
	b, err := s.readFile("/etc/os-release")
	if err != nil {
		b, err = s.readFile("/usr/lib/os-release")
		if err != nil {
			return ""
		}
	}
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && (k == "ID" || k == "ID_LIKE") {
			ids = append(ids, strings.Fields(strings.Trim(v, `"'`))...)
		}
	}
	for _, id := range ids {
		switch id {
		case "debian", "ubuntu":
			return "debian"
		case "fedora", "rhel", "centos", "rocky", "almalinux":
			return "fedora"
		}
	}
	return ""
}

const fsModeSocket = fs.ModeSocket
