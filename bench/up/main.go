// Command benchup measures `usernode up`: the time from the command to the
// node Ready and to the first pod Running, and the steady-state memory of
// every process of the node, usernode's own processes apart from the
// Kubernetes components. Side by side, in the same run and interleaved, it
// measures the same binaries started by hand the task page's "hard way"
// (hardway.sh: Debian's RootlessKit with slirp4netns, configs from
// usernode's generators). Cold starts (purged state: PKI, etcd, images
// from nothing) and warm ones (stopped, state kept, started again) are
// measured separately; the table shows medians.
//
// Run it as root (`make bench-up`): everything rootless runs as the
// non-root test user through setpriv; root only reads /proc of that
// user's processes and removes the hard way's state.
//
// In gen mode (BENCHUP_MODE=gen, run as the user) it writes the hard way's
// config dir (gen.go).
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/usernode/usernode/internal/procenv"
)

//go:embed hardway.sh
var hardwayScript []byte

const modeEnv = "BENCHUP_MODE"

var (
	rounds      = flag.Int("rounds", 3, "rounds; each does a cold and a warm start of both, interleaved")
	settle      = flag.Duration("settle", 10*time.Second, "wait after the first pod is Running before reading the processes' memory")
	binDir      = flag.String("bin-dir", "/opt/usernode-k8s", "kubelet, kube-apiserver, ... and etcd")
	hwBinDir    = flag.String("hardway-bin-dir", "", "the hard way's binaries, if not -bin-dir's: upstream's layout is five separate daemons, where `make k8s` links them to one kube-node")
	usernodeBin = flag.String("usernode", "bin/usernode", "the usernode binary (make build)")
	userName    = flag.String("user", "usernode-test", "non-root account that runs the nodes")
	nodeName    = flag.String("name", "benchup", "usernode's node name; the hard way's is NAME-hw")
	apiPort     = flag.Int("api-port", 36443, "host port for usernode's kube-apiserver; the hard way uses the next one")
	kubeletPort = flag.Int("kubelet-port", 40250, "host port for usernode's kubelet API; the hard way uses the next one")
	timeout     = flag.Duration("timeout", 3*time.Minute, "limit for each start (to the pod Running)")
	only        = flag.String("only", "", "run only the sides whose label starts with this: usernode (every runtime), usernodecrio, or hardway")
	runtimes    = flag.String("runtimes", "containerd,crio", "the CRI runtimes usernode runs, each a side of its own (the hard way runs containerd)")
	pods        = flag.Int("pods", 20, "on each warm start, pods started at once after the first, for the memory each pod adds; 0: none")
	verbose     = flag.Bool("v", false, "print every start's figures and the commands' output")
)

func main() {
	if os.Getenv(modeEnv) == "gen" {
		fs := flag.NewFlagSet("gen", flag.ExitOnError)
		var o genOptions
		fs.StringVar(&o.Name, "name", "", "node name")
		fs.StringVar(&o.State, "state", "", "HW_STATE")
		fs.StringVar(&o.BinDir, "bin-dir", "/opt/usernode-k8s", "Kubernetes binaries")
		fs.IntVar(&o.APIPort, "api-port", 6443, "host port of kube-apiserver")
		fs.StringVar(&o.Pause, "pause", "", "static binary for the pause image where internal/pause has no program for this architecture")
		_ = fs.Parse(os.Args[1:]) // ExitOnError: it exits rather than return an error
		if err := gen(o); err != nil {
			die("gen: %v", err)
		}
		return
	}
	flag.Parse()
	if os.Geteuid() != 0 {
		die("run as root (make bench-up): it drops to %s for everything rootless", *userName)
	}
	if err := run(); err != nil {
		die("%v", err)
	}
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchup: "+format+"\n", a...)
	os.Exit(1)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "benchup: "+format+"\n", a...)
}

// ---- running things as the user ----

type account struct {
	name, home string
	uid, gid   int
}

var acct account

func (a account) runtimeDir() string { return fmt.Sprintf("/run/user/%d", a.uid) }

func hardwayBins() string {
	if *hwBinDir != "" {
		return *hwBinDir
	}
	return *binDir
}

func asUser(env []string, argv ...string) *exec.Cmd {
	args := []string{"--reuid=" + strconv.Itoa(acct.uid), "--regid=" + strconv.Itoa(acct.gid), "--init-groups",
		"env", "-i", "PATH=" + procenv.Path,
		"HOME=" + acct.home, "USER=" + acct.name, "LOGNAME=" + acct.name, "XDG_RUNTIME_DIR=" + acct.runtimeDir(), "LANG=C.UTF-8"}
	args = append(append(args, env...), argv...)
	c := exec.Command("setpriv", args...)
	c.Dir = "/"
	return c
}

// syncBuf collects a command's output while it runs.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ---- the two ways ----

type side struct {
	label      string // "usernode", "usernode crio" or "hard way"
	usernode   bool   // started with `usernode up`, with flags
	flags      []string
	name       string // node name
	api, kport int
	kubeconfig string
	state      string // hard way: HW_STATE

	// while a start is running
	cmd     *exec.Cmd
	out     *syncBuf
	exited  chan struct{} // closed once cmd has been waited for
	waitErr error         // what Wait returned, once exited is closed
}

type result struct {
	ready, pod, returned, stop, gen float64 // seconds; returned: `up -d` came back
	created                         float64 // the API accepted the pod
	refused                         string  // why it did not before
	mem                             map[string]mem
	perPod                          map[string]mem // what each of -pods more pods added (warm starts)
	phases                          map[string]float64
	others                          []string
}

var work string // copies of the binaries and the script, readable by the user

func run() error {
	u, err := user.Lookup(*userName)
	if err != nil {
		return fmt.Errorf("%v: run `make test-user` (hack/test-user.sh) first", err)
	}
	acct.name, acct.home = u.Username, u.HomeDir
	acct.uid, _ = strconv.Atoi(u.Uid)
	acct.gid, _ = strconv.Atoi(u.Gid)
	if err := os.MkdirAll(acct.runtimeDir(), 0o700); err != nil {
		return err
	}
	if err := os.Chown(acct.runtimeDir(), acct.uid, acct.gid); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(*binDir, "kubelet")); err != nil {
		return fmt.Errorf("no kubelet in -bin-dir %s: %v", *binDir, err)
	}

	// Under /tmp, as hack/run-as-user.sh does. Both sides get the same
	// pause image, internal/pause's program (images.Pause: usernode's
	// node builds it, gen for the hard way); the binary's place does not
	// matter to it.
	work, err = os.MkdirTemp("/tmp", "usernode-bench-up.")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }() // best effort; it is under /tmp
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	self, _ := os.Executable()
	for dst, src := range map[string]string{"usernode": *usernodeBin, "benchup": self} {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(work, dst), b, 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(work, "hardway.sh"), hardwayScript, 0o755); err != nil {
		return err
	}

	un := &side{label: "usernode", usernode: true, name: *nodeName, api: *apiPort, kport: *kubeletPort,
		kubeconfig: filepath.Join(acct.home, ".local/share/usernode", *nodeName, "kubeconfig")}
	hwName := *nodeName + "-hw"
	hwState := filepath.Join(acct.home, ".local/share/usernode-hardway", hwName)
	hw := &side{label: "hard way", name: hwName, api: *apiPort + 1, kport: *kubeletPort + 1,
		state: hwState, kubeconfig: filepath.Join(hwState, "kubeconfig")}
	all := []*side{un}
	// Each other runtime this host runs is a side of its own: the same
	// node, the same pod, measured in the same rounds.
	for _, rt := range strings.Split(*runtimes, ",") {
		if rt == "" || rt == "containerd" {
			continue
		}
		name := *nodeName + "-" + rt
		all = append(all, &side{label: "usernode " + rt, usernode: true, flags: []string{"--cri", rt}, name: name,
			api: *apiPort + 1 + len(all), kport: *kubeletPort + 1 + len(all),
			kubeconfig: filepath.Join(acct.home, ".local/share/usernode", name, "kubeconfig")})
	}
	hw.api, hw.kport = *apiPort+len(all), *kubeletPort+len(all)
	all = append(all, hw)
	var sides []*side
	for _, s := range all {
		if *only == "" || strings.HasPrefix(strings.ReplaceAll(s.label, " ", ""), *only) {
			sides = append(sides, s)
		}
	}
	for _, s := range sides {
		for _, p := range []int{s.api, s.kport} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return fmt.Errorf("port %d (for %s) is taken: choose others with -api-port/-kubelet-port", p, s.label)
			}
			l.Close()
		}
	}
	for _, s := range sides {
		if !s.usernode {
			continue
		}
		if out, err := asUser(nil, filepath.Join(work, "usernode"), "status", "--name", s.name).CombinedOutput(); err == nil {
			return fmt.Errorf("a node named %q is already running (%s): stop it (`usernode down --name %s`) or pass another -name", s.name, strings.SplitN(string(out), "\n", 2)[0], s.name)
		}
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	// Teardown on the way out, best effort: an error return already says
	// what went wrong, and the success path has purged (below).
	defer func() {
		for _, s := range sides {
			s.stopNow()
			_ = s.purge()
		}
	}()

	others := countUserProcs()
	load0 := loadavg()
	startAll := time.Now()
	res := map[string][]result{}
	for r := 0; r < *rounds; r++ {
		// Each round starts with the next side, so none always goes
		// first (or last) on a machine that warms up or slows down.
		order := append(append([]*side{}, sides[r%len(sides):]...), sides[:r%len(sides)]...)
		for _, s := range order {
			if err := s.purge(); err != nil {
				return err
			}
		}
		for _, cold := range []bool{true, false} {
			for _, s := range order {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				kind := map[bool]string{true: "cold", false: "warm"}[cold]
				rs, err := s.measure(ctx, cold, r)
				if err != nil {
					logf("round %d %s %s: %v", r+1, s.label, kind, err)
					fmt.Fprintln(os.Stderr, tailLines(s.out.String(), 30))
					s.stopNow()
					continue
				}
				res[s.label+" "+kind] = append(res[s.label+" "+kind], rs)
				logf("round %d %-8s %s: Ready %.1fs, pod accepted %.1fs, Running %.1fs, stop %.1fs; RSS launcher %.1f MB, node total %.0f MB",
					r+1, s.label, kind, rs.ready, rs.created, rs.pod, rs.stop,
					total(rs.mem, launcher, rssOf), total(rs.mem, func(string) bool { return true }, rssOf))
				if rs.perPod != nil {
					logf("  each of %d more pods: PSS pause %.3f MB, node total %.2f MB", *pods,
						rs.perPod["pod: pause"].pss, total(rs.perPod, func(string) bool { return true }, pssOf))
				}
				if *verbose {
					if rs.refused != "" {
						logf("  the API refused the pod until then: %s", rs.refused)
					}
					fmt.Fprintln(os.Stderr, s.out.String())
				}
			}
		}
	}
	for _, s := range sides {
		// Said, not returned: the measurements are done and still reported.
		if err := s.purge(); err != nil {
			logf("%s: %v", s.label, err)
		}
	}
	return report(os.Stdout, res, sides, others, load0, time.Since(startAll))
}

// measure does one start: up, Ready, a pod Running, settle, memory, pod
// deleted, stop.
func (s *side) measure(ctx context.Context, cold bool, round int) (result, error) {
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var r result
	s.out = &syncBuf{}
	s.exited = make(chan struct{})
	failed := make(chan error, 1)
	var returned time.Duration

	t0 := time.Now()
	if s.usernode {
		s.cmd = asUser(nil, append([]string{filepath.Join(work, "usernode"), "up", "-d", "--bin-dir", *binDir, "--name", s.name,
			"--api-port", strconv.Itoa(s.api), "--kubelet-port", strconv.Itoa(s.kport)}, s.flags...)...)
	} else {
		if cold {
			g := asUser([]string{modeEnv + "=gen"}, filepath.Join(work, "benchup"), "-name", s.name, "-state", s.state,
				"-bin-dir", hardwayBins(), "-api-port", strconv.Itoa(s.api), "-pause", "")
			if out, err := g.CombinedOutput(); err != nil {
				return r, fmt.Errorf("gen: %v: %s", err, out)
			}
			r.gen = time.Since(t0).Seconds()
		}
		s.cmd = asUser([]string{"HW_STATE=" + s.state, "HW_BIN=" + hardwayBins(),
			"HW_API_PORT=" + strconv.Itoa(s.api), "HW_KUBELET_PORT=" + strconv.Itoa(s.kport)},
			filepath.Join(work, "hardway.sh"))
	}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		return r, err
	}
	go func() {
		err := s.cmd.Wait()
		returned = time.Since(t0)
		s.waitErr = err
		close(s.exited)
		if err != nil || !s.usernode {
			failed <- fmt.Errorf("%s exited: %v", s.label, err)
		}
	}()
	cs, err := waitReady(ctx, s.kubeconfig, s.name, t0, failed)
	if err != nil {
		return r, err
	}
	r.ready = time.Since(t0).Seconds()
	pod := fmt.Sprintf("bench-%d-%s", round+1, map[bool]string{true: "cold", false: "warm"}[cold])
	created, refused, err := runPod(ctx, cs, pod)
	if err != nil {
		return r, err
	}
	r.pod = time.Since(t0).Seconds()
	r.created = created.Sub(t0).Seconds()
	r.refused = refused

	var root int
	if s.usernode {
		// `up -d` returns once it has seen the node Ready itself.
		select {
		case <-s.exited:
			if s.waitErr != nil {
				return r, fmt.Errorf("usernode up: %v", s.waitErr)
			}
		case <-ctx.Done():
			return r, fmt.Errorf("usernode up -d did not return: %w", ctx.Err())
		}
		r.returned = returned.Seconds()
		out, err := asUser(nil, filepath.Join(work, "usernode"), "status", "--name", s.name, "--json").Output()
		if err != nil {
			return r, fmt.Errorf("usernode status: %v", err)
		}
		var st struct {
			Sandbox struct {
				SupervisorPID int `json:"supervisorPID"`
			} `json:"sandbox"`
		}
		if err := json.Unmarshal(out, &st); err != nil || st.Sandbox.SupervisorPID == 0 {
			return r, fmt.Errorf("usernode status --json: %v: %s", err, out)
		}
		root = st.Sandbox.SupervisorPID
	} else {
		root = s.cmd.Process.Pid // setpriv, env and the script exec into rootlesskit
	}

	select {
	case <-time.After(*settle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.mem, r.others = sample(root)
	if !cold && *pods > 0 {
		// Its own limit: 20 pods at once take longer than one on 2 cores.
		pctx, pcancel := context.WithTimeout(outer, *timeout)
		r.perPod, err = morePods(pctx, cs, pod+"-pods", *pods, root, r.mem)
		pcancel()
		if err != nil {
			return r, err
		}
	}
	r.phases = s.phases(t0)

	if err := deletePod(ctx, cs, pod); err != nil {
		return r, err
	}
	t1 := time.Now()
	if err := s.stop(); err != nil {
		return r, err
	}
	r.stop = time.Since(t1).Seconds()
	return r, nil
}

var (
	phaseRe = regexp.MustCompile(`(?m)^usernode: ([a-z0-9-]+(?: ready)?)\s+([0-9.]+)(ms|s)\b`)
	upRe    = regexp.MustCompile("(?m)Ready ([0-9.]+)s after `up`")
	hwRe    = regexp.MustCompile(`(?m)^hardway: (\S+) ([0-9]+\.[0-9]+)$`)
)

// phases: usernode's own phase lines (durations), or the hard way's steps
// (seconds from the start).
func (s *side) phases(t0 time.Time) map[string]float64 {
	out := map[string]float64{}
	text := s.out.String()
	if s.usernode {
		for _, m := range phaseRe.FindAllStringSubmatch(text, -1) {
			v, _ := strconv.ParseFloat(m[2], 64)
			if m[3] == "ms" {
				v /= 1000
			}
			out[m[1]] = v
		}
		if m := upRe.FindStringSubmatch(text); m != nil {
			out["Ready after `up` (its own line)"], _ = strconv.ParseFloat(m[1], 64)
		}
		return out
	}
	for _, m := range hwRe.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = v - float64(t0.UnixNano())/1e9
	}
	return out
}

func (s *side) stop() error {
	if s.usernode {
		out, err := asUser(nil, filepath.Join(work, "usernode"), "down", "--name", s.name).CombinedOutput()
		if err != nil {
			return fmt.Errorf("usernode down: %v: %s", err, out)
		}
		return nil
	}
	// How the script exits once signalled (or killed) does not matter: the
	// stop is whether it exits. A signal to one already gone is a no-op.
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		s.cmd = nil
		return nil
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
		return errors.New("the hard way did not stop within 1 min after SIGTERM; killed rootlesskit")
	}
}

// stopNow stops whatever a failed or interrupted start left running.
func (s *side) stopNow() {
	if s.usernode {
		// Best effort, as the rest: the start has already failed, and
		// purge, which follows, reports what is left.
		_ = asUser(nil, filepath.Join(work, "usernode"), "down", "--name", s.name).Run()
		return
	}
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.stop()
	}
}

func (s *side) purge() error {
	if s.usernode {
		out, err := asUser(nil, filepath.Join(work, "usernode"), "down", "--name", s.name, "--purge").CombinedOutput()
		if _, serr := os.Stat(filepath.Dir(s.kubeconfig)); serr == nil {
			return fmt.Errorf("usernode down --purge left %s: %v: %s", filepath.Dir(s.kubeconfig), err, out)
		}
		return nil
	}
	err := os.RemoveAll(s.state)
	_ = os.Remove(filepath.Dir(s.state)) // if empty; fails if not, which is fine
	return err
}

func countUserProcs() int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if fi, err := os.Stat("/proc/" + e.Name()); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == acct.uid {
				n++
			}
		}
	}
	return n
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

var _ io.Writer = (*syncBuf)(nil)
