package containerd

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/usernode/usernode/internal/images"
	"github.com/usernode/usernode/internal/procenv"
	"github.com/usernode/usernode/internal/supervise"
	"github.com/usernode/usernode/pkg/node/component"
)

// CRI registers containerd as a CRI runtime. 1.x runs in both modes;
// 2.x refuses degraded mode (Render says why).
var CRI = component.Runtime{
	Name:     "containerd",
	Daemon:   daemon,
	Endpoint: "unix://" + DefaultAddress,
	Probe:    Probe,
	New:      func() component.Component { return Component{} },
}

// Probe runs `containerd --version`: 1.x runs in both modes, 2.x only
// with a delegated cgroup tree.
func Probe(ctx context.Context, bin string) (component.RuntimeInfo, error) {
	v, err := binaryVersion(ctx, bin)
	if err != nil {
		return component.RuntimeInfo{}, err
	}
	info := component.RuntimeInfo{Name: "containerd", Version: v, Path: bin, Full: true, Degraded: true}
	if err := degradedOK(v); err != nil {
		info.Degraded, info.Why = false, err.Error()
	}
	return info, nil
}

func binaryVersion(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return ParseVersionOutput(string(out))
}

// daemon is containerd itself: 1.4 is the first release with the seed's
// rootless settings.
var daemon = component.Tool{Name: "containerd", Names: []string{"containerd"}, Debian: "containerd", Fedora: "containerd", Min: "1.4"}

// OCIRuntime is the runc-compatible runtime containerd starts containers
// with.
var OCIRuntime = component.Tool{Name: "oci-runtime", Names: []string{"runc", "crun"}, Debian: "runc", Fedora: "runc"}

// Component configures and runs containerd, and imports the node's images.
type Component struct{}

// Name is the supervisor's name for it.
func (Component) Name() string { return "containerd" }

// Tools are containerd, its ctr client (image imports) and runc shim,
// and an OCI runtime. ctr and the shim are taken from containerd's own
// directory first: a 2.x build named with --containerd runs with its own,
// not the system's 1.x ones.
func (Component) Tools() []component.Tool {
	return []component.Tool{
		daemon,
		{Name: "ctr", Names: []string{"ctr"}, Beside: daemon.Name, Debian: "containerd", Fedora: "containerd"},
		shim,
		OCIRuntime,
	}
}

// shim is what containerd runs each pod sandbox under. containerd finds it
// in PATH (and beside itself only when PATH has none), so the step puts
// the found one's directory first in PATH.
var shim = component.Tool{Name: "containerd-shim", Names: []string{"containerd-shim-runc-v2"}, Beside: daemon.Name, Debian: "containerd", Fedora: "containerd"}

// Steps writes containerd.toml for the containerd found and the node's
// mode, starts containerd, then imports each image archive.
func (Component) Steps(env *component.Env) ([]supervise.Step, error) {
	bin := env.Bin("containerd")
	v, err := binaryVersion(context.Background(), bin)
	if err != nil {
		return nil, err
	}
	cfg, err := Render(Options{Version: v, Degraded: env.Degraded, OCIRuntime: env.Bin("oci-runtime"),
		CNIBinDir: env.Bin("cni-plugins"), SandboxImage: images.PauseRef})
	if err != nil {
		return nil, fmt.Errorf("containerd config: %w", err)
	}
	if err := env.WriteFile(DefaultConfigPath, cfg); err != nil {
		return nil, err
	}
	// containerd waits for nothing; the imports, each for containerd
	// only, run beside each other and beside the control plane's start.
	steps := []supervise.Step{{Name: "containerd", Argv: []string{bin, "--config", DefaultConfigPath},
		Env:   []string{"PATH=" + filepath.Dir(env.Bin(shim.Name)) + ":" + procenv.Path},
		Ready: &supervise.Probe{Unix: DefaultAddress}, After: []string{}}}
	for i, img := range env.Images {
		steps = append(steps, supervise.Step{Name: component.ImportStep(i), Oneshot: true, After: []string{"containerd"},
			Argv: []string{env.Bin("ctr"), "--address", DefaultAddress, "--namespace", "k8s.io", "images", "import", img}})
	}
	return steps, nil
}
