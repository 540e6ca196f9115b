package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// sysctl reads /proc/sys/a/b for "a.b"; ok is false when the kernel has no
// such knob.
func (r *run) sysctl(name string) (string, bool, error) {
	v, err := r.sys.readTrim("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	return v, err == nil, err
}

func sysctlFix(name, value string) *Fix {
	// One file per setting, overwritten, so running the fix twice is harmless.
	file := "/etc/sysctl.d/99-usernode-" + name + ".conf"
	return same(fmt.Sprintf("sysctl -w %s=%s\necho '%s = %s' > %s", name, value, name, value, file))
}

func unreadable(name string, err error) Result {
	return Result{Status: Warn, Found: fmt.Sprintf("cannot read %s: %v", name, err)}
}

func checkUsernsClone(_ context.Context, r *run) Result {
	const name = "kernel.unprivileged_userns_clone"
	v, ok, err := r.sysctl(name)
	switch {
	case err != nil:
		return unreadable(name, err)
	case !ok:
		return Result{Status: Skip, Found: "not present: this kernel does not gate unprivileged user namespaces with it (only Debian's and some older distribution kernels do)"}
	case v == "1":
		return Result{Status: Pass, Found: name + " = 1"}
	}
	return Result{Status: Fail, Found: name + " = " + v,
		Why: "With 0, only root may create user namespaces, and a rootless node is one.",
		Fix: sysctlFix(name, "1"), Root: true}
}

// minUserNamespaces is where doctor starts to warn. A node needs one user
// namespace for itself, one per pod with hostUsers: false (up to the
// kubelet's default maxPods of 110) and a few for build tools and helpers;
// about ten times that leaves room. Distributions default to tens of
// thousands (scaled with RAM), so a smaller value is a deliberate lockdown
// worth naming.
const minUserNamespaces = 1000

func checkMaxUserNS(_ context.Context, r *run) Result {
	const name = "user.max_user_namespaces"
	v, ok, err := r.sysctl(name)
	switch {
	case err != nil:
		return unreadable(name, err)
	case !ok:
		return Result{Status: Fail, Found: name + " is missing: the kernel has no user namespace support",
			Why: "usernode runs the node inside a user namespace.", Fix: same("# boot a kernel built with CONFIG_USER_NS=y")}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		return Result{Status: Warn, Found: fmt.Sprintf("%s = %q: not a number", name, v)}
	// 28633 is the value RHEL 7's rootless container documentation sets.
	case n == 0:
		return Result{Status: Fail, Found: name + " = 0",
			Why: "0 forbids creating user namespaces at all, and the node is one.",
			Fix: sysctlFix(name, "28633"), Root: true}
	case n < minUserNamespaces:
		return Result{Status: Warn, Found: fmt.Sprintf("%s = %d (doctor warns below %d)", name, n, minUserNamespaces),
			Why: "The node needs one user namespace, plus one per pod with hostUsers: false (up to 110 pods per node by default) and more for build tools; when the limit is hit, pods fail to start with ENOSPC.",
			Fix: sysctlFix(name, "28633"), Root: true}
	}
	return Result{Status: Pass, Found: fmt.Sprintf("%s = %d", name, n)}
}

const apparmorProfile = "/etc/apparmor.d/usernode"

func checkAppArmorUserns(_ context.Context, r *run) Result {
	const name = "kernel.apparmor_restrict_unprivileged_userns"
	v, ok, err := r.sysctl(name)
	switch {
	case err != nil:
		return unreadable(name, err)
	case !ok:
		return Result{Status: Skip, Found: "not present (only Ubuntu 23.10+ kernels have it)"}
	case v == "0":
		return Result{Status: Pass, Found: name + " = 0"}
	}
	if b, err := r.sys.readFile(apparmorProfile); err == nil && strings.Contains(string(b), "userns,") {
		return Result{Status: Pass, Found: fmt.Sprintf("%s = %s; %s allows userns for usernode (load it with apparmor_parser -r %s if you just wrote it)", name, v, apparmorProfile, apparmorProfile)}
	}
	return Result{Status: Fail, Found: fmt.Sprintf("%s = %s and no %s allowing userns", name, v, apparmorProfile),
		Why: "Ubuntu's AppArmor then denies unprivileged user namespaces to every program without a profile that allows `userns,`: the node's namespace is created but has no capabilities, and mounts and uid maps fail with EPERM.",
		Fix: r.apparmorFix(), Root: true}
}

// apparmorFix writes a profile for usernode's own binary, as Ubuntu ships
// for podman and others; setting the sysctl to 0 is the blunt alternative
// that lifts the restriction for every program.
func (r *run) apparmorFix() *Fix {
	exe := r.sys.Executable
	if exe == "" || strings.ContainsAny(exe, "\"\n\x00") {
		exe = "/usr/local/bin/usernode"
	}
	profile := "abi <abi/4.0>,\ninclude <tunables/global>\n\n" +
		"profile usernode \"" + exe + "\" flags=(unconfined) {\n  userns,\n\n  include if exists <local/usernode>\n}\n"
	ubuntu := "cat > " + apparmorProfile + " <<'EOF'\n" + profile + "EOF\n" +
		"apparmor_parser -r " + apparmorProfile + "\n" +
		"# blunt alternative, for every program: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
	return &Fix{Debian: ubuntu, Fedora: "# Fedora and RHEL kernels have no such sysctl; on Ubuntu:\n" + ubuntu}
}

func checkPortStart(_ context.Context, r *run) Result {
	const name = "net.ipv4.ip_unprivileged_port_start"
	v, ok, err := r.sysctl(name)
	switch {
	case err != nil:
		return unreadable(name, err)
	case !ok:
		return Result{Status: Skip, Found: "not present (kernel older than 4.11): ports below 1024 need root"}
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return Result{Status: Warn, Found: fmt.Sprintf("%s = %q: not a number", name, v)}
	}
	if n <= 80 {
		return Result{Status: Pass, Found: fmt.Sprintf("%s = %d", name, n)}
	}
	return Result{Status: Warn, Found: fmt.Sprintf("%s = %d: host ports below %d (such as 80 and 443) cannot be forwarded to the node", name, n, n),
		Why: "usernode forwards host ports to NodePorts and hostPorts as the user; the kernel only lets an unprivileged process bind ports at or above this value. Higher ports work regardless.",
		Fix: sysctlFix(name, "0"), Root: true}
}

func checkIPForward(_ context.Context, r *run) Result {
	v, ok, err := r.sysctl("net.ipv4.ip_forward")
	host := "unknown"
	if err == nil && ok {
		host = v
	}
	return Result{Status: Info, Found: "host net.ipv4.ip_forward = " + host + "; not needed",
		Why: "Pods route through the node's own network namespace, which usernode creates and owns as root of its user namespace; usernode sets net.ipv4.ip_forward=1 there. The host's value does not affect the node."}
}
