// Package containerd renders containerd's config.toml for a rootless node
// (/etc/usernode/containerd.toml, regenerated at each `up`): config
// version 2 for containerd 1.6 and 1.7 (Debian 12 ships 1.6.20), version 3
// for containerd 2.0 to 2.2 and version 4 for 2.3 and later, chosen from the
// version the caller reads from `containerd --version` (ParseVersionOutput).
//
// The file is encoded with github.com/pelletier/go-toml/v2 from the small
// typed structs below, which hold only the fields usernode sets; every
// other field keeps containerd's default. containerd's own config types are
// not used: they live in containerd's main module (1.x) or an internal
// package (2.x), and importing them would pull the daemon, its plugins and
// their dependencies into usernode's build for a dozen keys.
package containerd

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/usernode/usernode/internal/version"
	"github.com/usernode/usernode/pkg/node/component"
)

// Defaults for Options, matching the layout inside the node.
const (
	DefaultVersion      = "1.6.20"
	DefaultConfigPath   = "/etc/usernode/containerd.toml"
	DefaultRoot         = "/var/lib/containerd"
	DefaultState        = "/run/containerd"
	DefaultAddress      = "/run/containerd/containerd.sock"
	DefaultSandboxImage = "registry.k8s.io/pause:3.10"
	// DefaultCNIBinDir is where Debian's containernetworking-plugins puts
	// the plugins (upstream uses /opt/cni/bin).
	DefaultCNIBinDir  = "/usr/lib/cni"
	DefaultCNIConfDir = "/etc/cni/net.d"
	// DefaultOptPath replaces containerd's /opt/containerd, which is the
	// host's, read-only inside the node.
	DefaultOptPath = "/var/lib/containerd/opt"
	// DefaultFuseOverlayfsAddress is the socket the
	// containerd-fuse-overlayfs-grpc proxy plugin is started on.
	DefaultFuseOverlayfsAddress = "/run/containerd-fuse-overlayfs.sock"

	// RuntimeName is the CRI runtime handler pods run with by default.
	RuntimeName = "runc"
)

// Snapshotters usernode knows how to configure.
const (
	// Overlayfs is containerd's built-in overlay snapshotter. A user
	// namespace may mount overlayfs on kernels >= 5.11 (without SELinux
	// enforcing); containerd >= 1.5 detects that it must use userxattr.
	Overlayfs = "overlayfs"
	// FuseOverlayfs runs through the containerd-fuse-overlayfs proxy
	// plugin, which the supervisor must start (it is not packaged in
	// Debian 12): for older kernels.
	FuseOverlayfs = "fuse-overlayfs"
	// Native copies each layer: works everywhere, slow and large.
	Native = "native"
)

// disabledPlugins cannot work in a user namespace, or not on a node that
// never uses them, and each costs start-up time and a log line: btrfs and
// zfs probe the root filesystem, devmapper wants a thin pool, and aufs
// (1.x only) tries to modprobe a module that does not exist upstream.
var disabledPlugins = []string{
	"io.containerd.snapshotter.v1.aufs",
	"io.containerd.snapshotter.v1.btrfs",
	"io.containerd.snapshotter.v1.devmapper",
	"io.containerd.snapshotter.v1.zfs",
}

// Options says what containerd must be told.
type Options struct {
	// Version is containerd's version ("1.6.20", "2.2.1"); it picks the
	// config version. Default 1.6.20.
	Version string
	// Degraded: no delegated cgroup v2 tree. containerd must not create
	// cgroups for pods (disable_cgroup), which only 1.x can do.
	Degraded bool

	SandboxImage string // default registry.k8s.io/pause:3.10
	Snapshotter  string // Overlayfs (default), FuseOverlayfs or Native
	// FuseOverlayfsAddress is the proxy plugin's socket, with FuseOverlayfs.
	FuseOverlayfsAddress string
	// OCIRuntime is the runc-compatible binary ("runc" or "crun", or a
	// path). Default runc.
	OCIRuntime string

	CNIBinDir  string // default /usr/lib/cni
	CNIConfDir string // default /etc/cni/net.d
	Root       string // default /var/lib/containerd
	State      string // default /run/containerd
	Address    string // default /run/containerd/containerd.sock
	OptPath    string // default /var/lib/containerd/opt
}

// ver is what the config depends on: the major and minor release.
type ver struct{ major, minor int }

func parseVersion(s string) (ver, error) {
	v, err := version.Parse(s)
	if err != nil {
		return ver{}, fmt.Errorf("containerd %w", err)
	}
	return ver{int(v.Major()), int(v.Minor())}, nil
}

// ParseVersionOutput returns the version in the output of `containerd
// --version`, e.g. "containerd github.com/containerd/containerd
// 1.6.20~ds1 1.6.20~ds1-1+deb12u3" gives "1.6.20~ds1".
func ParseVersionOutput(out string) (string, error) {
	f := bytes.Fields([]byte(out))
	if len(f) < 3 || string(f[0]) != "containerd" {
		return "", fmt.Errorf("not the output of containerd --version: %q", out)
	}
	v := string(f[2])
	if _, err := parseVersion(v); err != nil {
		return "", err
	}
	return v, nil
}

// ConfigVersion is the config.toml version containerd v reads natively.
func ConfigVersion(v string) (int, error) {
	pv, err := parseVersion(v)
	if err != nil {
		return 0, err
	}
	switch {
	case pv.major == 1 && pv.minor >= 6:
		return 2, nil
	case pv.major == 2 && pv.minor <= 2:
		return 3, nil
	case pv.major >= 2:
		// 2.3 moved the server settings ([grpc], [ttrpc]) into server
		// plugins (version 4). It still reads version 3, but migrates it
		// at every start and logs a warning saying so (measured with
		// 2.4.2). Version 4 is the newest format; a newer containerd that
		// still reads it is more likely than not.
		return 4, nil
	default:
		return 0, fmt.Errorf("containerd %s is not supported: usernode needs 1.6 or newer", v)
	}
}

func (o *Options) defaults() (ver, error) {
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	v, err := parseVersion(o.Version)
	if err != nil {
		return ver{}, err
	}
	if _, err := ConfigVersion(o.Version); err != nil {
		return ver{}, err
	}
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.SandboxImage, DefaultSandboxImage)
	def(&o.Snapshotter, Overlayfs)
	def(&o.OCIRuntime, "runc")
	def(&o.CNIBinDir, DefaultCNIBinDir)
	def(&o.CNIConfDir, DefaultCNIConfDir)
	def(&o.Root, DefaultRoot)
	def(&o.State, DefaultState)
	def(&o.Address, DefaultAddress)
	def(&o.OptPath, DefaultOptPath)
	switch o.Snapshotter {
	case Overlayfs, Native:
	case FuseOverlayfs:
		def(&o.FuseOverlayfsAddress, DefaultFuseOverlayfsAddress)
	default:
		return ver{}, fmt.Errorf("snapshotter %q: use %s, %s or %s", o.Snapshotter, Overlayfs, FuseOverlayfs, Native)
	}
	return v, nil
}

// Render is the config.toml for o, in the format o.Version reads.
func Render(o Options) ([]byte, error) {
	v, err := o.defaults()
	if err != nil {
		return nil, err
	}
	if v.major == 1 {
		return component.TOML(configV2For(o))
	}
	if o.Degraded {
		if err := degradedOK(o.Version); err != nil {
			return nil, err
		}
	}
	return component.TOML(configV3For(o, v))
}

// degradedOK says whether containerd v runs a node without a delegated
// cgroup tree, and if not what to do instead.
func degradedOK(v string) error {
	pv, err := parseVersion(v)
	if err != nil {
		return err
	}
	if pv.major == 1 {
		return nil
	}
	return fmt.Errorf("%w: containerd %s cannot run a node without a delegated cgroup v2 tree (degraded mode): containerd 2.0 removed the CRI plugin's disable_cgroup, so every pod sandbox would fail to create its cgroup. Choose one: give the node a delegated cgroup v2 tree (`usernode doctor` says how), run CRI-O (--cri crio), or run containerd 1.6/1.7 (--containerd PATH)", ErrDegradedNeeds1x, v)
}

// Config version 2: containerd 1.6 and 1.7.

// ConfigV2 is the part of containerd 1.x's config usernode sets.
type ConfigV2 struct {
	Version         int                    `toml:"version"`
	Root            string                 `toml:"root"`
	State           string                 `toml:"state"`
	DisabledPlugins []string               `toml:"disabled_plugins"`
	GRPC            GRPC                   `toml:"grpc"`
	ProxyPlugins    map[string]ProxyPlugin `toml:"proxy_plugins,omitempty"`
	Plugins         PluginsV2              `toml:"plugins"`
}

// GRPC is [grpc]: the socket containerd serves on, which the kubelet
// and usernode's image import dial. In version 4 it is the table of the
// gRPC and of the ttrpc server plugin.
type GRPC struct {
	Address string `toml:"address"`
}

// ProxyPlugin is one [proxy_plugins] entry: a plugin containerd reaches
// over a socket (fuse-overlayfs's snapshotter).
type ProxyPlugin struct {
	Type    string `toml:"type"`
	Address string `toml:"address"`
}

// PluginsV2 is [plugins] of a version 2 config: the CRI plugin's settings,
// and opt's path.
type PluginsV2 struct {
	CRI CRIV2 `toml:"io.containerd.grpc.v1.cri"`
	Opt Opt   `toml:"io.containerd.internal.v1.opt"`
}

// CRIV2 is [plugins."io.containerd.grpc.v1.cri"].
type CRIV2 struct {
	SandboxImage             string          `toml:"sandbox_image"`
	DisableApparmor          bool            `toml:"disable_apparmor"`
	RestrictOOMScoreAdj      bool            `toml:"restrict_oom_score_adj"`
	DisableHugetlbController bool            `toml:"disable_hugetlb_controller"`
	DisableCgroup            bool            `toml:"disable_cgroup"`
	Containerd               CRIContainerdV2 `toml:"containerd"`
	CNI                      CNI             `toml:"cni"`
}

// CRIContainerdV2 is the CRI plugin's [containerd] table in version 2: the
// snapshotter and the runtimes pods run with.
type CRIContainerdV2 struct {
	Snapshotter        string             `toml:"snapshotter"`
	DefaultRuntimeName string             `toml:"default_runtime_name"`
	Runtimes           map[string]Runtime `toml:"runtimes"`
}

// Runtime is one entry of the CRI plugin's runtimes: the runc shim and
// the OCI runtime binary it runs.
type Runtime struct {
	RuntimeType string      `toml:"runtime_type"`
	Options     RuncOptions `toml:"options"`
}

// RuncOptions are the runc shim's options (its field names, not snake case).
type RuncOptions struct {
	SystemdCgroup bool   `toml:"SystemdCgroup"`
	BinaryName    string `toml:"BinaryName"`
}

// CNI is the CRI plugin's [cni] table: where containerd finds the CNI
// plugins and the config list pkg/node/cni writes.
type CNI struct {
	BinDir  string   `toml:"bin_dir,omitempty"`
	BinDirs []string `toml:"bin_dirs,omitempty"`
	ConfDir string   `toml:"conf_dir"`
}

// Opt is the opt plugin's table: where it installs its binaries, kept
// under the node's own root rather than the host's /opt.
type Opt struct {
	Path string `toml:"path"`
}

// The CRI settings of the task page, shared by both versions.
func runtimes(o Options) map[string]Runtime {
	return map[string]Runtime{RuntimeName: {
		RuntimeType: "io.containerd.runc.v2",
		// cgroupfs like the kubelet: no systemd manages cgroups inside the
		// node's namespaces.
		Options: RuncOptions{SystemdCgroup: false, BinaryName: o.OCIRuntime},
	}}
}

func proxyPlugins(o Options) map[string]ProxyPlugin {
	if o.Snapshotter != FuseOverlayfs {
		return nil
	}
	return map[string]ProxyPlugin{FuseOverlayfs: {Type: "snapshot", Address: o.FuseOverlayfsAddress}}
}

func configV2For(o Options) *ConfigV2 {
	return &ConfigV2{
		Version:         2,
		Root:            o.Root,
		State:           o.State,
		DisabledPlugins: disabledPlugins,
		GRPC:            GRPC{Address: o.Address},
		ProxyPlugins:    proxyPlugins(o),
		Plugins: PluginsV2{
			CRI: CRIV2{
				// The caller imports a locally built pause image under this
				// name: no registry may be reachable.
				SandboxImage: o.SandboxImage,
				// The task page's four: AppArmor profiles cannot be loaded
				// from a user namespace; oom_score_adj may only be raised
				// there; the hugetlb controller is not delegated.
				DisableApparmor:          true,
				RestrictOOMScoreAdj:      true,
				DisableHugetlbController: true,
				// Measured (containerd 1.6.20, hybrid host): without it
				// every sandbox fails "mkdir /sys/fs/cgroup/k8s.io:
				// permission denied". Side effect: no pod limits.
				DisableCgroup: o.Degraded,
				Containerd: CRIContainerdV2{
					Snapshotter:        o.Snapshotter,
					DefaultRuntimeName: RuntimeName,
					Runtimes:           runtimes(o),
				},
				CNI: CNI{BinDir: o.CNIBinDir, ConfDir: o.CNIConfDir},
			},
			Opt: Opt{Path: o.OptPath},
		},
	}
}

// Config versions 3 and 4: containerd 2.x, where the CRI plugin is split
// into images and runtime plugins and disable_cgroup no longer exists.
// Version 4 (2.3 and later) differs only in where the sockets are set:
// [grpc] becomes the io.containerd.server.v1.grpc plugin's table, and the
// ttrpc socket, which version 3 derived from the gRPC one, is set on its
// own plugin.

// ConfigV3 is the part of containerd 2.x's config usernode sets, in
// version 3 or 4.
type ConfigV3 struct {
	Version         int                    `toml:"version"`
	Root            string                 `toml:"root"`
	State           string                 `toml:"state"`
	DisabledPlugins []string               `toml:"disabled_plugins"`
	GRPC            *GRPC                  `toml:"grpc,omitempty"` // version 3 only
	ProxyPlugins    map[string]ProxyPlugin `toml:"proxy_plugins,omitempty"`
	Plugins         PluginsV3              `toml:"plugins"`
}

// PluginsV3 is [plugins] of a version 3 or 4 config, where 1.x's CRI
// plugin is split into an images and a runtime plugin.
type PluginsV3 struct {
	Images  CRIImagesV3  `toml:"io.containerd.cri.v1.images"`
	Runtime CRIRuntimeV3 `toml:"io.containerd.cri.v1.runtime"`
	Opt     Opt          `toml:"io.containerd.internal.v1.opt"`
	// The server plugins: version 4 only.
	GRPCServer  *GRPC `toml:"io.containerd.server.v1.grpc,omitempty"`
	TTRPCServer *GRPC `toml:"io.containerd.server.v1.ttrpc,omitempty"`
}

// CRIImagesV3 is [plugins."io.containerd.cri.v1.images"]: the snapshotter
// and the pinned pause image.
type CRIImagesV3 struct {
	Snapshotter string `toml:"snapshotter"`
	// PinnedImages["sandbox"] replaces 1.x's sandbox_image; pinned images
	// are also spared by the kubelet's image GC.
	PinnedImages map[string]string `toml:"pinned_images"`
}

// CRIRuntimeV3 is [plugins."io.containerd.cri.v1.runtime"]: the settings a
// user namespace needs, the runtimes and CNI.
type CRIRuntimeV3 struct {
	DisableApparmor          bool            `toml:"disable_apparmor"`
	RestrictOOMScoreAdj      bool            `toml:"restrict_oom_score_adj"`
	DisableHugetlbController bool            `toml:"disable_hugetlb_controller"`
	Containerd               CRIContainerdV3 `toml:"containerd"`
	CNI                      CNI             `toml:"cni"`
}

// CRIContainerdV3 is the runtime plugin's [containerd] table in version 3
// (the snapshotter moved to the images plugin).
type CRIContainerdV3 struct {
	DefaultRuntimeName string             `toml:"default_runtime_name"`
	Runtimes           map[string]Runtime `toml:"runtimes"`
}

func configV3For(o Options, v ver) *ConfigV3 {
	cni := CNI{ConfDir: o.CNIConfDir}
	// bin_dirs arrived in 2.1, which deprecated bin_dir (2.4.2 still
	// reads it).
	if v.major == 2 && v.minor == 0 {
		cni.BinDir = o.CNIBinDir
	} else {
		cni.BinDirs = []string{o.CNIBinDir}
	}
	c := &ConfigV3{
		Version:         3,
		Root:            o.Root,
		State:           o.State,
		DisabledPlugins: disabledPlugins,
		GRPC:            &GRPC{Address: o.Address},
		ProxyPlugins:    proxyPlugins(o),
		Plugins: PluginsV3{
			Images: CRIImagesV3{
				Snapshotter:  o.Snapshotter,
				PinnedImages: map[string]string{"sandbox": o.SandboxImage},
			},
			Runtime: CRIRuntimeV3{
				DisableApparmor:          true,
				RestrictOOMScoreAdj:      true,
				DisableHugetlbController: true,
				Containerd: CRIContainerdV3{
					DefaultRuntimeName: RuntimeName,
					Runtimes:           runtimes(o),
				},
				CNI: cni,
			},
			Opt: Opt{Path: o.OptPath},
		},
	}
	if v.major > 2 || v.minor >= 3 {
		c.Version, c.GRPC = 4, nil
		c.Plugins.GRPCServer = &GRPC{Address: o.Address}
		// Where version 3 put it: the shims and ctr find it there.
		c.Plugins.TTRPCServer = &GRPC{Address: o.Address + ".ttrpc"}
	}
	return c
}

// ErrDegradedNeeds1x is wrapped by Render for containerd 2.x in degraded mode.
var ErrDegradedNeeds1x = errors.New("degraded mode needs containerd 1.x")
