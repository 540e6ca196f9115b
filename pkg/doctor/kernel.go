package doctor

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func checkUserNS(_ context.Context, r *run) Result {
	if r.sys.exists("/proc/self/ns/user") {
		return Result{Status: Pass, Found: "/proc/self/ns/user exists"}
	}
	return Result{Status: Fail, Found: "/proc/self/ns/user is missing: the kernel has no user namespaces",
		Why: "The whole node runs inside a user namespace.", Fix: same("# boot a kernel built with CONFIG_USER_NS=y")}
}

func (r *run) release() string {
	v, _ := r.sys.readTrim("/proc/sys/kernel/osrelease")
	return v
}

// kernelAtLeast compares the leading major.minor of a release string.
func kernelAtLeast(rel string, major, minor int) bool {
	f := strings.FieldsFunc(rel, func(c rune) bool { return c < '0' || c > '9' })
	if len(f) < 2 {
		return false
	}
	ma, _ := strconv.Atoi(f[0])
	mi, _ := strconv.Atoi(f[1])
	return ma > major || ma == major && mi >= minor
}

func (r *run) filesystems() []string {
	b, _ := r.sys.readFile("/proc/filesystems")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			out = append(out, f[len(f)-1])
		}
	}
	return out
}

func checkOverlay(_ context.Context, r *run) Result {
	s := r.sys
	rel := r.release()
	var reasons []string
	if !kernelAtLeast(rel, 5, 11) {
		reasons = append(reasons, fmt.Sprintf("kernel %q is older than 5.11 (the first to allow overlayfs in a user namespace)", rel))
	}
	hasOverlay := false
	for _, f := range r.filesystems() {
		hasOverlay = hasOverlay || f == "overlay"
	}
	if !hasOverlay && r.module(kfeature{modules: []string{"overlay"}, configs: []string{"CONFIG_OVERLAY_FS"}}).present() {
		hasOverlay = true
	}
	if !hasOverlay {
		reasons = append(reasons, "overlay is not in /proc/filesystems")
	}
	if v, err := s.readTrim("/sys/fs/selinux/enforce"); err == nil && v == "1" {
		reasons = append(reasons, "SELinux is enforcing (it denies overlayfs mounts in a user namespace)")
	}
	if len(reasons) == 0 {
		return Result{Status: Pass, Found: fmt.Sprintf("kernel %s mounts overlayfs in a user namespace: containerd uses the overlayfs snapshotter", rel)}
	}
	fuseBin, haveFuseBin := s.LookPath("fuse-overlayfs")
	fuseDev := "/dev/fuse"
	fuseErr := error(nil)
	if _, err := s.Stat(fuseDev); err != nil {
		fuseErr = err
	} else if err := s.OpenRW(fuseDev); err != nil {
		fuseErr = err
	}
	found := strings.Join(reasons, "; ")
	if haveFuseBin && fuseErr == nil {
		return Result{Status: Pass, Found: found + "; using fuse-overlayfs (" + fuseBin + ")"}
	}
	why := "Without overlayfs in the user namespace, containerd needs the fuse-overlayfs snapshotter; otherwise it falls back to the native snapshotter, which copies every image layer in full (slow, and disk use multiplies)."
	res := Result{Status: Warn, Why: why, Root: true}
	var debian, fedora []string
	if !haveFuseBin {
		found += "; fuse-overlayfs is not installed"
		debian = append(debian, "apt-get install -y fuse-overlayfs")
		fedora = append(fedora, "dnf install -y fuse-overlayfs")
	}
	if fuseErr != nil {
		found += fmt.Sprintf("; %s: %v", fuseDev, fuseErr)
		fix := "chmod 0666 /dev/fuse\n# persist it: echo 'KERNEL==\"fuse\", MODE=\"0666\"' > /etc/udev/rules.d/99-usernode-fuse.rules"
		debian = append(debian, fix)
		fedora = append(fedora, fix)
	}
	res.Found = found
	res.Fix = &Fix{Debian: strings.Join(debian, "\n"), Fedora: strings.Join(fedora, "\n")}
	return res
}

const tunRule = `KERNEL=="tun", MODE="0666", OPTIONS+="static_node=tun"`

func checkTun(_ context.Context, r *run) Result {
	s := r.sys
	const dev = "/dev/net/tun"
	why := "slirp4netns and pasta give the node's network namespace its interface through a TAP device from " + dev + ", opened as the user."
	fi, err := s.Stat(dev)
	if err != nil {
		return Result{Status: Fail, Found: fmt.Sprintf("%s: %v", dev, err), Why: why, Root: true,
			Fix: same("modprobe tun\necho tun > /etc/modules-load.d/usernode-tun.conf")}
	}
	if fi.Mode.Type() != fs.ModeDevice|fs.ModeCharDevice {
		return Result{Status: Fail, Found: dev + " is not a character device", Why: why, Root: true,
			Fix: same("rm -f /dev/net/tun\nmknod -m 0666 /dev/net/tun c 10 200")}
	}
	mode := fmt.Sprintf("mode %04o, owner uid %d", fi.Mode.Perm(), fi.UID)
	if err := s.OpenRW(dev); err != nil {
		found := fmt.Sprintf("open %s read-write: %v (%s)", dev, err, mode)
		fix := same("chmod 0666 /dev/net/tun\n# persist it across reboots:\necho '" + tunRule + "' > /etc/udev/rules.d/99-usernode-tun.rules")
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			found += ": slirp4netns and pasta fail with \"open: Permission denied\""
		} else {
			fix = same("modprobe tun")
		}
		return Result{Status: Fail, Found: found, Why: why, Fix: fix, Root: true}
	}
	return Result{Status: Pass, Found: "character device, " + mode + ", opens read-write"}
}

// kfeature is a kernel feature provided by one of several modules.
type kfeature struct {
	what     string
	modules  []string
	configs  []string
	required bool // the single-node default needs it
	why      string
}

type kstate struct {
	state  string // "loaded", "built-in", "module", "absent", "unknown"
	source string
}

func (k kstate) present() bool { return k.state == "loaded" || k.state == "built-in" }

// kernelConfig reads the kernel's build configuration, from /proc/config.gz
// or /boot/config-RELEASE; nil when neither exists.
func (r *run) kernelConfig() map[string]string {
	return r.memo("kconfig", func() any {
		var data []byte
		if b, err := r.sys.readFile("/proc/config.gz"); err == nil {
			if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
				data, _ = io.ReadAll(io.LimitReader(zr, 16<<20))
			}
		}
		if data == nil {
			data, _ = r.sys.readFile("/boot/config-" + r.release())
		}
		if data == nil {
			return map[string]string(nil)
		}
		m := map[string]string{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
				m[k] = v
			}
		}
		return m
	}).(map[string]string)
}

func (r *run) readLines(p string) []string {
	b, err := r.sys.readFile(p)
	if err != nil {
		return nil
	}
	return strings.Split(string(b), "\n")
}

// module decides whether a feature is available, from the strongest signal
// found: sysfs and /proc/modules (loaded or built in with parameters), then
// modules.builtin and the kernel config, then modules.dep (loadable).
// Many built-ins (veth, br_netfilter) leave no trace in /sys/module, and
// /lib/modules may not exist at all (VMs booted with an external kernel).
func (r *run) module(f kfeature) kstate {
	s := r.sys
	for _, m := range f.modules {
		if s.exists("/sys/module/" + m) {
			return kstate{"loaded", "/sys/module/" + m}
		}
	}
	for _, l := range r.readLines("/proc/modules") {
		for _, m := range f.modules {
			if strings.HasPrefix(l, m+" ") {
				return kstate{"loaded", "/proc/modules"}
			}
		}
	}
	rel := r.release()
	libmod := "/lib/modules/" + rel
	hasKo := func(file string) bool {
		for _, l := range r.readLines(libmod + "/" + file) {
			name, _, _ := strings.Cut(l, ":")
			for _, m := range f.modules {
				for _, alt := range []string{m, strings.ReplaceAll(m, "_", "-")} {
					if strings.HasSuffix(name, "/"+alt+".ko") || strings.Contains(name, "/"+alt+".ko.") {
						return true
					}
				}
			}
		}
		return false
	}
	if hasKo("modules.builtin") {
		return kstate{"built-in", libmod + "/modules.builtin"}
	}
	cfg := r.kernelConfig()
	for _, c := range f.configs {
		switch cfg[c] {
		case "y":
			return kstate{"built-in", c + "=y"}
		case "m":
			return kstate{"module", c + "=m"}
		}
	}
	if hasKo("modules.dep") {
		return kstate{"module", libmod + "/modules.dep"}
	}
	if cfg != nil {
		return kstate{"absent", "not in the kernel config"}
	}
	return kstate{"unknown", "no /sys/module entry, /proc/config.gz or " + libmod}
}

var kfeatures = []kfeature{
	{what: "bridge", modules: []string{"bridge"}, configs: []string{"CONFIG_BRIDGE"}, required: true, why: "the CNI bridge plugin"},
	{what: "veth", modules: []string{"veth"}, configs: []string{"CONFIG_VETH"}, required: true, why: "pod interfaces"},
	{what: "iptables nat", modules: []string{"iptable_nat", "nft_chain_nat"}, configs: []string{"CONFIG_IP_NF_NAT", "CONFIG_NFT_NAT"}, required: true, why: "kube-proxy's Services and the portmap plugin"},
	{what: "vxlan", modules: []string{"vxlan"}, configs: []string{"CONFIG_VXLAN"}, why: "Flannel VXLAN between nodes"},
	{what: "br_netfilter", modules: []string{"br_netfilter"}, configs: []string{"CONFIG_BRIDGE_NETFILTER"}, why: "kube-proxy seeing pod-to-Service traffic on the bridge"},
}

func checkModules(_ context.Context, r *run) Result {
	var found, load, unknown, missingReq, missingOpt, whys []string
	for _, f := range kfeatures {
		st := r.module(f)
		if f.what == "iptables nat" && st.state != "loaded" {
			for _, l := range r.readLines("/proc/net/ip_tables_names") {
				if strings.TrimSpace(l) == "nat" {
					st = kstate{"loaded", "/proc/net/ip_tables_names"}
				}
			}
		}
		found = append(found, fmt.Sprintf("%s: %s (%s)", f.what, st.state, st.source))
		switch st.state {
		case "module":
			// Load at boot: autoloading on first use from inside a user
			// namespace is not something to rely on.
			load = append(load, f.modules[0])
			whys = append(whys, f.what+" for "+f.why)
		case "unknown":
			unknown = append(unknown, f.what)
		case "absent":
			if f.required {
				missingReq = append(missingReq, f.what)
			} else {
				missingOpt = append(missingOpt, f.what)
			}
			whys = append(whys, f.what+" for "+f.why)
		}
	}
	res := Result{Found: strings.Join(found, "; ")}
	if len(load) > 0 {
		res.Fix = same("modprobe -a " + strings.Join(load, " ") + "\nprintf '%s\\n' " + strings.Join(load, " ") + " > /etc/modules-load.d/usernode.conf")
		res.Root = true
	}
	switch {
	case len(missingReq) > 0:
		res.Status = Fail
		res.Why = "The node needs " + joinAnd(whys) + "; this kernel was built without " + joinAnd(append(missingReq, missingOpt...)) + "."
		res.Fix = same("# boot a kernel with these features (every distribution kernel has them)")
		res.Root = false
	case len(missingOpt) > 0 || len(load) > 0:
		res.Status = Warn
		res.Why = "The node uses " + joinAnd(whys) + "."
		if len(missingOpt) > 0 {
			res.Why += " Missing from this kernel: " + joinAnd(missingOpt) + "."
		}
	case len(unknown) > 0:
		res.Status = Warn
		res.Why = "doctor could not tell whether the kernel has " + joinAnd(unknown) + " (no /sys/module entry, no kernel config, no /lib/modules); the node fails at pod start if they are missing."
	default:
		res.Status = Pass
	}
	return res
}
