package install

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRenderDefault(t *testing.T) {
	b, err := Render(Options{Binary: "/usr/local/bin/usernode"})
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{
		"\n[Service]\n",
		"\nType=notify\n",
		"\nNotifyAccess=main\n",
		"\nExecStart=/usr/local/bin/usernode up\n",
		"\nDelegate=yes\n",
		"\nKillMode=mixed\n",
		"\nTimeoutStartSec=360\n",
		"\nTimeoutStopSec=150\n",
		"\nRestart=on-failure\n",
		"\nEnvironment=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
		"\n[Install]\nWantedBy=default.target\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if strings.Contains(unit, "ExecStop=") {
		t.Errorf("unit has an ExecStop (KillMode=mixed's SIGTERM is the stop):\n%s", unit)
	}
}

func TestRenderOptions(t *testing.T) {
	b, err := Render(Options{
		Binary: "/opt/user node/usernode", Name: "dev", ReadyTimeout: 10 * time.Minute,
		Args: []string{"--name=dev", "--state-dir=/srv/nodes/dev", "--config=/etc/100%/usernode.yaml", "--net=pasta", "--timeout=10m0s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	want := `ExecStart="/opt/user node/usernode" up --name=dev --state-dir=/srv/nodes/dev --config=/etc/100%%/usernode.yaml --net=pasta --timeout=10m0s` + "\n"
	if !strings.Contains(unit, want) {
		t.Errorf("unit lacks\n%s\n%s", want, unit)
	}
	if !strings.Contains(unit, "\nTimeoutStartSec=660\n") || !strings.Contains(unit, "node dev\n") {
		t.Errorf("timeout or description:\n%s", unit)
	}
	if UnitName("dev") != "usernode-dev.service" || UnitName("") != "usernode.service" {
		t.Errorf("unit names %s %s", UnitName("dev"), UnitName(""))
	}
}

func TestRenderRejects(t *testing.T) {
	for name, o := range map[string]Options{
		"relative binary": {Binary: "bin/usernode"},
		"bad name":        {Binary: "/u", Name: "Bad_Name"},
	} {
		if _, err := Render(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":      "plain",
		"a b":        `"a b"`,
		`x"y`:        `"x\"y"`,
		`c:\dir`:     `"c:\\dir"`,
		"50%":        "50%%",
		"$HOME":      "$$HOME",
		"":           `""`,
		"semi;colon": `"semi;colon"`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

// systemd-analyze verify parses the unit as systemd does (and checks that
// ExecStart's binary exists), where it is installed.
func TestRenderVerifies(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "usernode")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := Render(Options{Binary: bin, Name: "verify", Args: []string{"--bin-dir=" + dir}})
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, UnitName("verify"))
	if err := os.WriteFile(unit, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", unit).CombinedOutput()
	// Hosts without systemd as PID 1 still parse the file; what matters is
	// that nothing about this unit is reported.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "usernode-verify.service") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	if err != nil && len(out) == 0 {
		t.Logf("systemd-analyze verify: %v", err)
	}
}

func fakeSystemctl(state map[string]string, calls *[]string) Systemctl {
	return func(args ...string) (string, error) {
		*calls = append(*calls, strings.Join(args, " "))
		if args[0] == "is-active" {
			return state[args[1]], nil
		}
		return "", nil
	}
}

func TestInstallUninstall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "systemd", "user")
	var calls []string
	sc := fakeSystemctl(map[string]string{"usernode.service": "active"}, &calls)
	res, err := Install(Options{Binary: "/usr/bin/usernode"}, dir, sc)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Path != filepath.Join(dir, "usernode.service") {
		t.Errorf("install result %+v", res)
	}
	if fi, err := os.Stat(res.Path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("unit file: %v %v", fi, err)
	}
	res, err = Install(Options{Binary: "/usr/bin/usernode"}, dir, sc)
	if err != nil || res.Changed {
		t.Errorf("second install: %+v %v (want unchanged)", res, err)
	}
	res, err = Uninstall("", dir, sc)
	if err != nil || !res.Stopped || !res.Changed {
		t.Errorf("uninstall: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "usernode.service")); !os.IsNotExist(err) {
		t.Errorf("unit file still there: %v", err)
	}
	want := "daemon-reload|daemon-reload|is-active usernode.service|stop usernode.service|disable usernode.service|daemon-reload|reset-failed usernode.service"
	if got := strings.Join(calls, "|"); got != want {
		t.Errorf("systemctl calls\n got %s\nwant %s", got, want)
	}
	calls = nil
	if res, err := Uninstall("", dir, sc); err != nil || res.Changed || len(calls) != 0 {
		t.Errorf("uninstall of nothing: %+v %v %v", res, err, calls)
	}
}

func TestUnitDir(t *testing.T) {
	env := map[string]string{"HOME": "/home/u"}
	d, _ := UnitDir(func(k string) string { return env[k] })
	if d != "/home/u/.config/systemd/user" {
		t.Errorf("UnitDir = %s", d)
	}
	env["XDG_CONFIG_HOME"] = "/cfg"
	d, _ = UnitDir(func(k string) string { return env[k] })
	if d != "/cfg/systemd/user" {
		t.Errorf("UnitDir = %s", d)
	}
	if _, err := UnitDir(func(string) string { return "" }); err == nil {
		t.Error("no HOME: no error")
	}
}

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	NotifyReady()
	buf := make([]byte, 128)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "READY=1\n") {
		t.Errorf("got %q %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}
