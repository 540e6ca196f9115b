package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usernode/usernode/internal/testutil"
)

// TestExpose: what a node exposes on its host, as users see it. Two
// single-node clusters of two users share host A (a network namespace):
// one publishes on 127.0.0.1 (the default), the other on 0.0.0.0. Host B
// is another machine on the LAN.
//
//   - LoadBalancer Services get an address and answer on the host at
//     their port (80 at 10080: below ip_unprivileged_port_start), TCP and
//     UDP, and close when deleted; another class's is left alone.
//   - A hostPort answers while its pod runs.
//   - 0.0.0.0 reaches host B; 127.0.0.1 does not.
//   - The same NodePort in both clusters: the second cannot have it, says
//     so on its Service and in `usernode status`, and gets it within
//     seconds of the first letting go.
func TestExpose(t *testing.T) {
	u1 := testutil.Integration(t)
	u2 := testutil.Account(t, testutil.SecondUser)
	bins := testutil.K8sBin(t)
	hostA, hostB := testutil.TwoHosts(t)
	bin := testutil.Binary(t)
	newNode := func(u *testutil.User, name string, api, klt int, extra ...string) *hostCluster {
		c := &hostCluster{cluster: &cluster{t: t, env: u.NewEnv(t), name: name, kubectlBin: filepath.Join(bins, "kubectl"), api: api, klt: klt, extra: extra}, host: hostA}
		c.env.NetNS = hostA.NetNS
		c.kubeconfig = filepath.Join(c.env.DataHome, "usernode", name, "kubeconfig")
		t.Cleanup(func() {
			if r := c.down("--purge"); r.Code != 0 {
				t.Errorf("down %s: %s", name, r)
			}
		})
		if r := c.up(); r.Code != 0 {
			t.Fatalf("up %s: %s", name, r)
		}
		return c
	}
	local := newNode(u1, "exa", 6443, 10250)
	open := newNode(u2, "exb", 6444, 10251, "--publish-address", "0.0.0.0", "--volume-guard", "warn")

	get := func(h *testutil.Host, addr string) (string, error) {
		out, err := h.In("curl", "-s", "-m", "5", "http://"+addr+"/").CombinedOutput()
		return string(out), err
	}
	serve := func(t *testing.T, c *hostCluster, name string, hostPort int) {
		script := web(name)
		ports := `"ports":[{"containerPort":8080}]`
		if hostPort > 0 {
			ports = fmt.Sprintf(`"ports":[{"containerPort":8080,"hostPort":%d}]`, hostPort)
		}
		c.must(t, "run", name, "--image="+busybox, "--image-pull-policy=Never", "--restart=Never", "--labels=app="+name,
			`--overrides={"spec":{"containers":[{"name":"`+name+`","image":"`+busybox+`","imagePullPolicy":"Never","command":["sh","-c",`+fmt.Sprintf("%q", script)+`],`+ports+`}]}}`)
		c.podIP(t, name)
	}

	t.Run("LoadBalancer", func(t *testing.T) {
		serve(t, local, "lbweb", 0)
		local.apply(t, `apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  selector: {app: lbweb}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: alt, port: 18080, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/lb
  selector: {app: lbweb}
  ports: [{port: 18081, targetPort: 8080}]
`)
		waitFor(t, "the LoadBalancer's address", time.Minute, func() (bool, string) {
			out, _ := local.kubectl("get", "svc", "lb", "-o", `jsonpath={.status.loadBalancer.ingress[0].ip} {.metadata.annotations.usernode\.io/exposed-ports}`)
			return out == "127.0.0.1 80/TCP=127.0.0.1:10080,18080/TCP=127.0.0.1:18080", out
		})
		r := local.env.Run(t, 30*time.Second, bin, "status", "--name", local.name)
		if !strings.Contains(r.Stdout, "LoadBalancer port 80/TCP of service/default/lb at 127.0.0.1:10080 (80 is below net.ipv4.ip_unprivileged_port_start=1024") {
			t.Errorf("status does not show where the LoadBalancer's port 80 went:\n%s", r.Stdout)
		}
		for _, addr := range []string{"127.0.0.1:10080", "127.0.0.1:18080"} {
			waitFor(t, "the LoadBalancer at "+addr, 30*time.Second, func() (bool, string) {
				out, err := get(hostA, addr)
				return err == nil && strings.Contains(out, "served-by-lbweb"), out
			})
		}
		if out, err := get(hostA, "127.0.0.1:18081"); err == nil {
			t.Errorf("another class's LoadBalancer was exposed: %s", out)
		}
		if out, _ := local.kubectl("get", "svc", "elsewhere", "-o", "jsonpath={.status.loadBalancer.ingress}"); out != "" {
			t.Errorf("another class's LoadBalancer got an address: %s", out)
		}

		// UDP: a LoadBalancer in front of the cluster's DNS (its
		// endpoints copied: CoreDNS is not a pod here).
		dns := strings.Fields(local.must(t, "get", "endpointslices", "-n", "kube-system", "-l", "kubernetes.io/service-name=kube-dns", "-o", "jsonpath={.items[0].endpoints[*].addresses[0]}"))
		if len(dns) == 0 {
			t.Fatal("no endpoints of kube-dns")
		}
		local.apply(t, `apiVersion: v1
kind: Service
metadata: {name: dnslb}
spec:
  type: LoadBalancer
  ports: [{name: dns, port: 15353, targetPort: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dnslb-1, labels: {kubernetes.io/service-name: dnslb}}
addressType: IPv4
ports: [{name: dns, port: 53, protocol: UDP}]
endpoints: [{addresses: [`+dns[0]+`]}]
`)
		resolver := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
			return hostA.Dial("udp", "127.0.0.1:15353")
		}}
		waitFor(t, "DNS over the UDP LoadBalancer", time.Minute, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			addrs, err := resolver.LookupHost(ctx, "kubernetes.default.svc.cluster.local")
			return err == nil && len(addrs) == 1 && addrs[0] == "10.96.0.1", fmt.Sprint(addrs, err)
		})

		local.must(t, "delete", "svc", "lb")
		waitFor(t, "the deleted LoadBalancer closed", 30*time.Second, func() (bool, string) {
			out, err := get(hostA, "127.0.0.1:10080")
			return err != nil, out
		})
	})

	t.Run("hostPort", func(t *testing.T) {
		serve(t, local, "hp", 18088)
		waitFor(t, "the hostPort on the host", 30*time.Second, func() (bool, string) {
			out, err := get(hostA, "127.0.0.1:18088")
			return err == nil && strings.Contains(out, "served-by-hp"), out
		})
		local.must(t, "delete", "pod", "hp", "--grace-period=1")
		waitFor(t, "the hostPort closed with its pod", 30*time.Second, func() (bool, string) {
			out, err := get(hostA, "127.0.0.1:18088")
			return err != nil, out
		})
	})

	t.Run("publish address", func(t *testing.T) {
		serve(t, open, "pub", 0)
		open.must(t, "create", "service", "nodeport", "pub", "--tcp=80:8080", "--node-port=30998")
		local.must(t, "create", "service", "nodeport", "lbweb", "--tcp=80:8080", "--node-port=30997")
		waitFor(t, "0.0.0.0's NodePort from host B", 30*time.Second, func() (bool, string) {
			out, err := get(hostB, hostA.IP.String()+":30998")
			return err == nil && strings.Contains(out, "served-by-pub"), out
		})
		waitFor(t, "127.0.0.1's NodePort on host A", 30*time.Second, func() (bool, string) {
			out, err := get(hostA, "127.0.0.1:30997")
			return err == nil && strings.Contains(out, "served-by-lbweb"), out
		})
		if out, err := get(hostB, hostA.IP.String()+":30997"); err == nil {
			t.Errorf("a NodePort published on 127.0.0.1 answered host B: %s", out)
		}
	})

	t.Run("clash", func(t *testing.T) {
		nodePort := func(name, app string) string {
			return fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: %s}\nspec: {type: NodePort, selector: {app: %s}, ports: [{port: 80, targetPort: 8080, nodePort: 30999}]}\n", name, app)
		}
		local.apply(t, nodePort("first", "lbweb"))
		waitFor(t, "the first NodePort", 30*time.Second, func() (bool, string) {
			out, err := get(hostA, "127.0.0.1:30999")
			return err == nil, out
		})
		open.apply(t, nodePort("second", "pub"))
		waitFor(t, "an Event on the second Service", 30*time.Second, func() (bool, string) {
			out, _ := open.kubectl("get", "events", "--field-selector", "involvedObject.name=second,reason=ExposeFailed", "-o", "jsonpath={.items[*].message}")
			return strings.Contains(out, "could not expose NodePort 30999/TCP") && strings.Contains(out, "in use"), out
		})
		r := open.env.Run(t, 30*time.Second, bin, "status", "--name", open.name)
		if !strings.Contains(r.Stdout, "not exposed") || !strings.Contains(r.Stdout, "NodePort 30999/TCP of service/default/second at 0.0.0.0:30999") {
			t.Errorf("status does not list the NodePort not exposed:\n%s", r.Stdout)
		}
		var st struct {
			Exposure struct {
				Failed []struct{ What, Reason string }
			}
		}
		if r := open.env.Run(t, 30*time.Second, bin, "status", "--name", open.name, "--json"); json.Unmarshal([]byte(r.Stdout), &st) != nil || len(st.Exposure.Failed) != 1 {
			t.Errorf("status --json: %+v\n%s", st, r.Stdout)
		}
		start := time.Now()
		local.must(t, "delete", "svc", "first")
		waitFor(t, "the second NodePort once the first is gone", 30*time.Second, func() (bool, string) {
			out, err := get(hostB, hostA.IP.String()+":30999")
			return err == nil && strings.Contains(out, "served-by-pub"), out
		})
		t.Logf("the second NodePort was exposed %.1fs after the first Service was deleted", time.Since(start).Seconds())
		waitFor(t, "an Exposed Event on the second Service", 30*time.Second, func() (bool, string) {
			out, _ := open.kubectl("get", "events", "--field-selector", "involvedObject.name=second,reason=Exposed", "-o", "jsonpath={.items[*].message}")
			return strings.Contains(out, "exposed NodePort 30999/TCP"), out
		})
		if r := open.env.Run(t, 30*time.Second, bin, "status", "--name", open.name); strings.Contains(r.Stdout, "not exposed") {
			t.Errorf("status still lists a port not exposed:\n%s", r.Stdout)
		}
	})

	// The volume guard: network storage, which a rootless node cannot
	// mount, is refused at create (deny, the default) or admitted with a
	// warning kubectl prints (warn); local kinds of volume run.
	t.Run("volume guard", func(t *testing.T) {
		nfsPod := `apiVersion: v1
kind: Pod
metadata: {name: nfs}
spec:
  containers: [{name: c, image: docker.io/library/busybox:usernode, imagePullPolicy: Never, command: [sleep, "3600"], volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, nfs: {server: 198.51.100.9, path: /export}}]
`
		applyOut := func(c *hostCluster, manifest string) (string, error) {
			cmd := c.host.In(c.kubectlBin, "--kubeconfig", c.kubeconfig, "apply", "-f", "-")
			cmd.Stdin = strings.NewReader(manifest)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := applyOut(local, nfsPod)
		if err == nil || !strings.Contains(out, "volume data of pod nfs uses network storage") || !strings.Contains(out, "user namespace") {
			t.Errorf("a pod with an nfs volume, guard deny: %v\n%s", err, out)
		}
		out, err = applyOut(local, `apiVersion: v1
kind: PersistentVolume
metadata: {name: iscsi}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  iscsi: {targetPortal: "198.51.100.9:3260", iqn: "iqn.2001-04.com.example:storage", lun: 0}
`)
		if err == nil || !strings.Contains(out, "PersistentVolume iscsi uses network storage") {
			t.Errorf("a PersistentVolume with iscsi, guard deny: %v\n%s", err, out)
		}
		out, err = applyOut(open, nfsPod)
		if err != nil || !strings.Contains(out, "Warning:") || !strings.Contains(out, "volume data of pod nfs uses network storage") {
			t.Errorf("a pod with an nfs volume, guard warn: %v\n%s", err, out)
		}
		local.must(t, "create", "configmap", "cm", "--from-literal=k=from-configmap")
		local.must(t, "create", "secret", "generic", "sec", "--from-literal=k=from-secret")
		local.apply(t, `apiVersion: v1
kind: Pod
metadata: {name: local-volumes}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: docker.io/library/busybox:usernode
    imagePullPolicy: Never
    # Each on a line of its own: the runtime holds a partial line back.
    command: [sh, -c, 'cat /cm/k; echo; cat /sec/k; echo; touch /scratch/ok /host/ok && echo wrote && sleep 3600']
    volumeMounts: [{name: cm, mountPath: /cm}, {name: sec, mountPath: /sec}, {name: scratch, mountPath: /scratch}, {name: host, mountPath: /host}]
  volumes:
  - {name: cm, configMap: {name: cm}}
  - {name: sec, secret: {secretName: sec}}
  - {name: scratch, emptyDir: {}}
  - {name: host, hostPath: {path: /tmp/usernode-guard-test, type: DirectoryOrCreate}}
`)
		local.podIP(t, "local-volumes")
		waitFor(t, "the pod with local volumes using them", 30*time.Second, func() (bool, string) {
			out, err := local.kubectl("logs", "local-volumes")
			if err != nil {
				d, _ := local.kubectl("describe", "pod", "local-volumes")
				out += d
			}
			return strings.Contains(out, "from-configmap") && strings.Contains(out, "from-secret") && strings.Contains(out, "wrote"), out
		})
	})

	t.Run("bad input", func(t *testing.T) {
		env := u1.NewEnv(t)
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--publish-address", "everywhere"}, "not an IP address"},
			{[]string{"--publish-address", "198.51.100.77"}, "not an address of this host"},
			{[]string{"--api-port", "443"}, "privileged"},
			{[]string{"--volume-guard", "maybe"}, "deny"},
		} {
			r := env.Run(t, time.Minute, bin, append([]string{"up", "--name", "exbad", "--bin-dir", bins}, c.args...)...)
			if r.Code == 0 || !strings.Contains(r.Stderr, c.want) {
				t.Errorf("up %v: exit %d, want an error naming %q:\n%s", c.args, r.Code, c.want, r.Stderr)
			}
			if _, err := os.Stat(filepath.Join(env.DataHome, "usernode", "exbad", "var")); err == nil {
				t.Errorf("up %v left its state behind", c.args)
			}
		}
	})
}
