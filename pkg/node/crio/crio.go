// Package crio renders CRI-O's configuration for a rootless node: crio.conf
// and the three files of the containers libraries it reads beside it
// (containers/storage's storage.conf, containers/image's registries.conf
// and signature policy), all under /etc/usernode/crio, regenerated at each
// `up`.
//
// The TOML files are encoded with github.com/pelletier/go-toml/v2 from the
// small typed structs below, which hold only the keys usernode sets; every
// other key keeps CRI-O's default. CRI-O's own config type
// (github.com/cri-o/cri-o/pkg/config) is not used: importing it would pull
// the daemon's dependency tree (containers/storage, containers/image,
// runc's libraries, cgo) into usernode's build for a few dozen keys.
//
// Everything CRI-O writes goes under the node's own dirs: images and
// containers under /var/lib (kept across runs), sockets and per-run state
// under /run (made afresh by each `up`), logs under /var/log.
package crio

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/usernode/usernode/internal/images"
	"github.com/usernode/usernode/pkg/node/component"
)

// Layout inside the node.
const (
	// DefaultConfigDir holds crio.conf and the containers libraries'
	// files it points at.
	DefaultConfigDir = "/etc/usernode/crio"
	// DefaultRoot and DefaultRunRoot are containers/storage's graph root
	// (images, layers: persistent, the seed's /var/lib/containers) and
	// run root (mount state: per run).
	DefaultRoot    = "/var/lib/containers/storage"
	DefaultRunRoot = "/run/containers/storage"
	// DefaultStateDir holds the socket, conmon's exit files and attach
	// sockets, pinned namespaces and the per-boot version file.
	DefaultStateDir = "/run/crio"
	DefaultAddress  = DefaultStateDir + "/crio.sock"
	// DefaultDataDir holds what must outlive a run: the persistent
	// version file, the clean-shutdown marker, big temporary files.
	DefaultDataDir = "/var/lib/crio"
	DefaultLogDir  = "/var/log/crio/pods"
	// DefaultCNIBinDir is where Debian's containernetworking-plugins puts
	// the plugins (upstream uses /opt/cni/bin); DefaultCNIConfDir is where
	// pkg/node/cni writes the network, as for containerd.
	DefaultCNIBinDir  = "/usr/lib/cni"
	DefaultCNIConfDir = "/etc/cni/net.d"
	DefaultConmon     = "/usr/bin/conmon"
	DefaultOCIRuntime = "/usr/bin/crun"
	// DefaultPauseImage is the pause image usernode builds and imports.
	DefaultPauseImage = images.PauseRef
)

// Options says what CRI-O must be told. Paths are as the node sees them.
type Options struct {
	// Degraded: no delegated cgroup v2 tree; CRI-O must not make pod
	// cgroups (see dropInfra).
	Degraded bool

	// PauseImage is the sandbox image, imported locally (no registry).
	PauseImage string
	// OCIRuntime is crun's or runc's path; the runtime handler is named
	// after its base name. Default /usr/bin/crun.
	OCIRuntime string
	Conmon     string // default /usr/bin/conmon
	// Pinns is CRI-O's namespace pinning helper, built with crio
	// (hack/build-crio.sh); required.
	Pinns string
	// StorageDriver is Overlay (default) or VFS.
	StorageDriver string
	// MountProgram is fuse-overlayfs's path when the kernel cannot mount
	// overlayfs in a user namespace; "" for native overlayfs.
	MountProgram string

	CNIBinDir  string // default /usr/lib/cni
	CNIConfDir string // default /etc/cni/net.d
	ConfigDir  string // default /etc/usernode/crio
	Root       string // default /var/lib/containers/storage
	RunRoot    string // default /run/containers/storage
	StateDir   string // default /run/crio
	DataDir    string // default /var/lib/crio
	LogDir     string // default /var/log/crio/pods
}

// Defaults fills in every unset path and checks o; the path methods
// below assume it ran (Render runs it on its copy).
func (o *Options) Defaults() error {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.PauseImage, DefaultPauseImage)
	def(&o.OCIRuntime, DefaultOCIRuntime)
	def(&o.Conmon, DefaultConmon)
	def(&o.CNIBinDir, DefaultCNIBinDir)
	def(&o.CNIConfDir, DefaultCNIConfDir)
	def(&o.ConfigDir, DefaultConfigDir)
	def(&o.Root, DefaultRoot)
	def(&o.RunRoot, DefaultRunRoot)
	def(&o.StateDir, DefaultStateDir)
	def(&o.DataDir, DefaultDataDir)
	def(&o.LogDir, DefaultLogDir)
	def(&o.StorageDriver, Overlay)
	if o.StorageDriver != Overlay && o.StorageDriver != VFS {
		return fmt.Errorf("storage driver %q: use %s or %s", o.StorageDriver, Overlay, VFS)
	}
	if o.MountProgram != "" && o.StorageDriver != Overlay {
		return fmt.Errorf("a mount program (%s) needs the %s storage driver, not %s", o.MountProgram, Overlay, o.StorageDriver)
	}
	if o.Pinns == "" {
		return fmt.Errorf("no pinns path: CRI-O refuses to start without its pinns helper, which hack/build-crio.sh builds beside crio")
	}
	for _, p := range []string{o.OCIRuntime, o.Conmon, o.Pinns, o.MountProgram, o.CNIBinDir, o.CNIConfDir, o.ConfigDir,
		o.Root, o.RunRoot, o.StateDir, o.DataDir, o.LogDir} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("%q is not an absolute path: CRI-O resolves relative paths against its own working directory", p)
		}
	}
	return nil
}

// ConfigPath is crio.conf's path; the other files Render makes are beside
// it.
func (o Options) ConfigPath() string { return filepath.Join(o.ConfigDir, "crio.conf") }

// StoragePath is containers/storage's storage.conf.
func (o Options) StoragePath() string { return filepath.Join(o.ConfigDir, "storage.conf") }

// RegistriesPath is containers/image's registries.conf.
func (o Options) RegistriesPath() string { return filepath.Join(o.ConfigDir, "registries.conf") }

// PolicyPath is containers/image's signature policy.
func (o Options) PolicyPath() string { return filepath.Join(o.ConfigDir, "policy.json") }

// Address is CRI-O's socket.
func (o Options) Address() string { return filepath.Join(o.StateDir, "crio.sock") }

// TempDir is where CRI-O and the image import put big temporary files:
// containers/image's default, /var/tmp, is the host's inside the node.
func (o Options) TempDir() string { return filepath.Join(o.DataDir, "tmp") }

// RegistriesDir is the registries.conf.d CRI-O reads (none exists):
// naming one stops containers/image from also reading the user's
// $HOME/.config/containers/registries.conf.d, which inside the node is
// the host's root's (measured: crio 1.36.3 exits with "invalid
// registries: reading registries.conf.d: lstat
// /root/.config/containers/registries.conf.d: permission denied").
func (o Options) RegistriesDir() string { return filepath.Join(o.ConfigDir, "registries.conf.d") }

// Env is the environment of every process that opens CRI-O's store (crio
// itself and the image import). The containers libraries read their files
// from variables, not crio.conf, and fall back to the host's
// /etc/containers and $HOME: crio reads CONTAINER_REGISTRIES_CONF and
// CONTAINER_REGISTRIES_CONF_DIR (its hidden --registries-conf flags),
// skopeo CONTAINERS_REGISTRIES_CONF, both CONTAINERS_STORAGE_CONF. HOME
// and TMPDIR (later than the supervisor's HOME=/root, so they win) move
// credentials lookups and big temporary files off the host's /root and
// /var/tmp, which the node sees but does not own.
func (o Options) Env() []string {
	return []string{
		"CONTAINERS_STORAGE_CONF=" + o.StoragePath(),
		"CONTAINER_REGISTRIES_CONF=" + o.RegistriesPath(),
		"CONTAINER_REGISTRIES_CONF_DIR=" + o.RegistriesDir(),
		"CONTAINERS_REGISTRIES_CONF=" + o.RegistriesPath(),
		"HOME=" + o.DataDir,
		"TMPDIR=" + o.TempDir(),
	}
}

// RootlessEnv tells crio it runs in a user namespace, as the seed asks: it
// then drops OOM score adjustments, AppArmor profiles, limits of cgroup
// controllers it was not delegated and the containers' cgroup paths
// (makeOCIConfigurationRootless; measured in degraded mode: "rootless:
// cgroup v2 memory controller is not delegated. Discarding memory limit.").
const RootlessEnv = "_CRIO_ROOTLESS=1"

// Files are the rendered files, by path inside the node.
type Files map[string][]byte

// Render is the four files for o.
func Render(o Options) (Files, error) {
	if err := o.Defaults(); err != nil {
		return nil, err
	}
	c, err := component.TOML(configFor(o))
	if err != nil {
		return nil, err
	}
	s, err := component.TOML(storageFor(o))
	if err != nil {
		return nil, err
	}
	r, err := component.TOML(registries())
	if err != nil {
		return nil, err
	}
	p, err := json.MarshalIndent(policy(), "", "  ")
	if err != nil {
		return nil, err
	}
	return Files{o.ConfigPath(): c, o.StoragePath(): s, o.RegistriesPath(): r, o.PolicyPath(): append(p, '\n')}, nil
}

// crio.conf.

// Config is the part of crio.conf usernode sets.
type Config struct {
	Crio Crio `toml:"crio"`
}

// Crio is [crio]: where containers/storage keeps images and containers,
// and CRI-O its own files.
type Crio struct {
	Root          string   `toml:"root"`
	RunRoot       string   `toml:"runroot"`
	StorageDriver string   `toml:"storage_driver"`
	StorageOption []string `toml:"storage_option"`
	LogDir        string   `toml:"log_dir"`
	// VersionFile (per run) makes CRI-O wipe the previous run's
	// containers, which died with the node; VersionFilePersist makes it
	// wipe images after an upgrade, which usernode imports again anyway.
	VersionFile        string  `toml:"version_file"`
	VersionFilePersist string  `toml:"version_file_persist"`
	CleanShutdownFile  string  `toml:"clean_shutdown_file"`
	API                API     `toml:"api"`
	Runtime            Runtime `toml:"runtime"`
	Image              Image   `toml:"image"`
	Network            Network `toml:"network"`
	NRI                NRI     `toml:"nri"`
}

// API is [crio.api]: the socket the kubelet and crictl dial.
type API struct {
	Listen string `toml:"listen"`
}

// Runtime is [crio.runtime].
type Runtime struct {
	CgroupManager    string `toml:"cgroup_manager"`
	DefaultRuntime   string `toml:"default_runtime"`
	DropInfraCtr     bool   `toml:"drop_infra_ctr"`
	ContainerExitDir string `toml:"container_exits_dir"`
	AttachSocketDir  string `toml:"container_attach_socket_dir"`
	NamespacesDir    string `toml:"namespaces_dir"`
	PinnsPath        string `toml:"pinns_path"`
	// IrqBalanceConfigFile and IrqBalanceConfigRestoreFile: CRI-O's IRQ
	// pinning edits the host's irqbalance config, which a node must not
	// touch (and cannot: /etc is a copy).
	IrqBalanceConfigFile        string                    `toml:"irqbalance_config_file"`
	IrqBalanceConfigRestoreFile string                    `toml:"irqbalance_config_restore_file"`
	Runtimes                    map[string]RuntimeHandler `toml:"runtimes"`
}

// RuntimeHandler is one [crio.runtime.runtimes.NAME] table: the OCI
// runtime and conmon, its monitor.
type RuntimeHandler struct {
	RuntimePath string `toml:"runtime_path"`
	RuntimeType string `toml:"runtime_type"`
	RuntimeRoot string `toml:"runtime_root"`
	// MonitorPath and MonitorCgroup replace [crio.runtime]'s deprecated
	// conmon and conmon_cgroup (CRI-O copies those into every handler).
	MonitorPath   string `toml:"monitor_path"`
	MonitorCgroup string `toml:"monitor_cgroup"`
}

// Image is [crio.image].
type Image struct {
	PauseImage string `toml:"pause_image"`
	// PauseCommand "" runs the pause image's own entrypoint: /pause
	// (internal/pause's program, or usernode itself) or busybox's sleep
	// (internal/images.Pause). CRI-O's default, "/pause", only fits the
	// first two.
	PauseCommand    string `toml:"pause_command"`
	SignaturePolicy string `toml:"signature_policy"`
	BigFilesTempDir string `toml:"big_files_temporary_dir"`
}

// Network is [crio.network]: the same CNI dirs as containerd's.
type Network struct {
	NetworkDir string   `toml:"network_dir"`
	PluginDirs []string `toml:"plugin_dirs"`
}

// NRI is [crio.nri]: no NRI plugin runs on a node; enabled, crio would
// load plugins from the host's /opt/nri and serve a socket nothing dials.
type NRI struct {
	EnableNRI bool `toml:"enable_nri"`
}

// irqBalanceRestoreDisable is the value that skips CRI-O's irqbalance
// restore at start (server.go in 1.36); an empty path still reads
// /proc/irq and looks for the file.
const irqBalanceRestoreDisable = "disable"

func configFor(o Options) *Config {
	handler := filepath.Base(o.OCIRuntime)
	return &Config{Crio: Crio{
		Root:               o.Root,
		RunRoot:            o.RunRoot,
		StorageDriver:      o.StorageDriver,
		StorageOption:      storageOptions(o),
		LogDir:             o.LogDir,
		VersionFile:        filepath.Join(o.StateDir, "version"),
		VersionFilePersist: filepath.Join(o.DataDir, "version"),
		CleanShutdownFile:  filepath.Join(o.DataDir, "clean.shutdown"),
		API:                API{Listen: o.Address()},
		Runtime: Runtime{
			// cgroupfs like the kubelet: no systemd manages cgroups inside
			// the node's namespaces.
			CgroupManager:               "cgroupfs",
			DefaultRuntime:              handler,
			DropInfraCtr:                dropInfra(o),
			ContainerExitDir:            filepath.Join(o.StateDir, "exits"),
			AttachSocketDir:             o.StateDir,
			NamespacesDir:               filepath.Join(o.StateDir, "ns"),
			PinnsPath:                   o.Pinns,
			IrqBalanceConfigFile:        "",
			IrqBalanceConfigRestoreFile: irqBalanceRestoreDisable,
			Runtimes: map[string]RuntimeHandler{handler: {
				RuntimePath: o.OCIRuntime,
				RuntimeType: "oci",
				RuntimeRoot: filepath.Join("/run", handler),
				MonitorPath: o.Conmon,
				// "pod": conmon joins the pod's cgroup, the only choice
				// with cgroupfs besides none (CRI-O refuses a slice).
				MonitorCgroup: "pod",
			}},
		},
		Image: Image{
			// The component imports a locally built pause image under
			// this name: no registry may be reachable.
			PauseImage:      o.PauseImage,
			PauseCommand:    "",
			SignaturePolicy: o.PolicyPath(),
			BigFilesTempDir: o.TempDir(),
		},
		Network: Network{NetworkDir: o.CNIConfDir, PluginDirs: []string{o.CNIBinDir}},
		NRI:     NRI{EnableNRI: false},
	}}
}

// dropInfra: CRI-O's default runs a pod that shares no PID namespace (the
// kubelet's default) without a pause process, and then makes the pod's
// cgroup itself, which degraded mode cannot: measured (CRI-O 1.36.3, this
// hybrid host), every such pod fails "create dropped infra ID cgroup:
// failed to create cpuset for newly created cgroup: mkdir
// /sys/fs/cgroup/cpuset/crio-ID: permission denied". With a pause process
// CRI-O makes no cgroup: rootless, it clears the containers' cgroup paths.
func dropInfra(o Options) bool { return !o.Degraded }

func storageOptions(o Options) []string {
	if o.MountProgram == "" {
		return []string{}
	}
	return []string{"overlay.mount_program=" + o.MountProgram}
}

// storage.conf: containers/storage's own file. CRI-O overrides it with
// crio.conf's keys; the image import (skopeo) reads only this, so both
// name the same store.

// StorageConf is the part of storage.conf usernode sets.
type StorageConf struct {
	Storage Storage `toml:"storage"`
}

// Storage is [storage].
type Storage struct {
	Driver    string         `toml:"driver"`
	GraphRoot string         `toml:"graphroot"`
	RunRoot   string         `toml:"runroot"`
	Options   StorageOptions `toml:"options"`
}

// StorageOptions is [storage.options].
type StorageOptions struct {
	Overlay OverlayOptions `toml:"overlay"`
}

// OverlayOptions is [storage.options.overlay].
type OverlayOptions struct {
	MountProgram string `toml:"mount_program,omitempty"`
}

func storageFor(o Options) *StorageConf {
	return &StorageConf{Storage: Storage{Driver: o.StorageDriver, GraphRoot: o.Root, RunRoot: o.RunRoot,
		Options: StorageOptions{Overlay: OverlayOptions{MountProgram: o.MountProgram}}}}
}

// registries.conf (version 2).

// Registries is the part of registries.conf usernode sets.
type Registries struct {
	// UnqualifiedSearchRegistries resolves a short name ("busybox") the
	// way the kubelet and containerd do, to docker.io/library/...; with
	// one entry no short name is ambiguous, which CRI-O's default
	// short_name_mode (enforcing) would refuse.
	UnqualifiedSearchRegistries []string `toml:"unqualified-search-registries"`
}

func registries() *Registries {
	return &Registries{UnqualifiedSearchRegistries: []string{"docker.io"}}
}

// Policy is containers/image's signature policy (policy.json).
type Policy struct {
	Default []PolicyRequirement `json:"default"`
}

// PolicyRequirement is one requirement of a policy.
type PolicyRequirement struct {
	Type string `json:"type"`
}

// policy accepts any image: the node's images are built on the machine
// and imported from local archives (no registry is reachable, so nothing
// is ever pulled), and they carry no signature to check. containers/image
// checks every copy against a policy, the import's included, and the
// host's /etc/containers/policy.json may be absent or demand signatures.
func policy() *Policy {
	return &Policy{Default: []PolicyRequirement{{Type: "insecureAcceptAnything"}}}
}
