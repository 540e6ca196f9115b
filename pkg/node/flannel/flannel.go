// Package flannel runs Flannel's flanneld (VXLAN, --kube-subnet-mgr) as a
// node's pod network when the cluster spans hosts, and writes the bridge
// CNI config for the subnet flannel leases (the node's spec.podCIDR).
//
// What makes it work from inside a rootless node, behind its host's NAT
// (each measured or read in flannel v0.28.10's source):
//   - peers must send to the node's host IP, where the host forwards
//     8472/udp into the node: the node annotates itself with
//     flannel.alpha.coreos.com/public-ip-overwrite before flanneld starts.
//     Not --public-ip: that also becomes the VXLAN device's local address,
//     which is on no interface in the node, and every packet is dropped at
//     transmit.
//   - the VXLAN MTU comes from the host's uplink, not the node's own link
//     (slirp4netns's 65520): flanneld subtracts 50 from Backend.MTU.
//   - rp_filter loose (2): VXLAN replies arrive on flannel.1 for sources
//     the node routes elsewhere; ip_forward on, which flanneld leaves to
//     others.
//   - tx checksum offload off on flannel.1: the outer UDP checksum is left
//     to a NIC that slirp4netns or pasta is not (flannel #1279).
package flannel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Fixed names and paths inside the node.
const (
	// Device is the VXLAN device flanneld makes for VNI 1.
	Device = "flannel.1"
	// VNI is the VXLAN network (flannel's default). Its UDP port is the
	// cluster's (cluster.vxlanPort).
	VNI = 1
	// SubnetFile is where flanneld writes the lease it got.
	SubnetFile = "/run/flannel/subnet.env"
	// NetConfPath is its network config.
	NetConfPath = "/etc/usernode/flannel-net-conf.json"
	// PublicIPOverwrite makes flanneld publish the given address (the
	// host's) as the one its peers send VXLAN to.
	PublicIPOverwrite = "flannel.alpha.coreos.com/public-ip-overwrite"
	// vxlanOverhead is what VXLAN over IPv4 adds to each packet, and what
	// flanneld subtracts from Backend.MTU.
	vxlanOverhead = 50
)

// NetConf is flanneld's net-conf.json.
type NetConf struct {
	Network        string  `json:"Network"`
	EnableNFTables bool    `json:"EnableNFTables"`
	Backend        Backend `json:"Backend"`
}

// Backend is the VXLAN backend's part of it.
type Backend struct {
	Type string `json:"Type"`
	VNI  int    `json:"VNI"`
	Port int    `json:"Port"`
	// MTU is the underlying link's: the host uplink's.
	MTU int `json:"MTU"`
}

// Config is the net-conf for a cluster whose pods are in podCIDR, across
// hosts whose uplinks have MTU uplinkMTU, with VXLAN on UDP port.
func Config(podCIDR netip.Prefix, uplinkMTU int, port uint16) (NetConf, error) {
	if !podCIDR.IsValid() || !podCIDR.Addr().Is4() {
		return NetConf{}, fmt.Errorf("flannel: the pod CIDR %v is not an IPv4 prefix", podCIDR)
	}
	if uplinkMTU < 576+vxlanOverhead {
		return NetConf{}, fmt.Errorf("flannel: uplink MTU %d leaves pods less than IPv4's 576 after VXLAN's %d", uplinkMTU, vxlanOverhead)
	}
	return NetConf{Network: podCIDR.String(), Backend: Backend{Type: "vxlan", VNI: VNI, Port: int(port), MTU: uplinkMTU}}, nil
}

// Render is c as JSON.
func Render(c NetConf) ([]byte, error) { return json.MarshalIndent(c, "", "  ") }

// Lease is what flanneld wrote to SubnetFile.
type Lease struct {
	Network netip.Prefix
	// Subnet is this node's, with the bridge's address (the first).
	Subnet netip.Prefix
	MTU    int
	IPMasq bool
}

// ParseLease reads subnet.env's KEY=VALUE lines.
func ParseLease(b []byte) (Lease, error) {
	var l Lease
	var err error
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		switch k {
		case "FLANNEL_NETWORK":
			l.Network, err = netip.ParsePrefix(v)
		case "FLANNEL_SUBNET":
			l.Subnet, err = netip.ParsePrefix(v)
		case "FLANNEL_MTU":
			l.MTU, err = strconv.Atoi(v)
		case "FLANNEL_IPMASQ":
			l.IPMasq = v == "true"
		}
		if err != nil {
			return l, fmt.Errorf("%s: %q: %w", k, v, err)
		}
	}
	if !l.Subnet.IsValid() || l.MTU == 0 {
		return l, fmt.Errorf("no FLANNEL_SUBNET or FLANNEL_MTU in %q", b)
	}
	return l, nil
}

// Sysctls are the node namespace's settings VXLAN needs, with why.
var Sysctls = []struct{ Path, Value, Why string }{
	{"net/ipv4/ip_forward", "1", "pods' traffic crosses from cni0 to flannel.1"},
	{"net/ipv4/conf/all/rp_filter", "2", "strict reverse-path filtering drops VXLAN from peers the node routes elsewhere"},
	{"net/ipv4/conf/default/rp_filter", "2", "flannel.1 and cni0 are made later and inherit it"},
}

// SetSysctls writes Sysctls under procSys (/proc/sys): per network
// namespace, so the node's user namespace may.
func SetSysctls(procSys string) error {
	for _, s := range Sysctls {
		if err := os.WriteFile(filepath.Join(procSys, s.Path), []byte(s.Value), 0o644); err != nil {
			return fmt.Errorf("setting %s=%s (%s): %w", strings.ReplaceAll(s.Path, "/", "."), s.Value, s.Why, err)
		}
	}
	return nil
}

// KeepTxChecksumOff turns tx checksum offload off on dev now and on every
// new device of that name until ctx ends, and calls remade (if not nil)
// after each new one. flanneld (v0.28) makes its VXLAN device again when
// it is deleted, and the kernel deletes it with its lower device: the
// node's tap0 or eth0, which goes with the network helper when slirp4netns
// or pasta is restarted. The device flanneld makes then has offload on
// again, and TCP across hosts would be lost. logf gets each fix and each
// failure.
func KeepTxChecksumOff(ctx context.Context, dev string, logf func(format string, args ...any), remade func()) error {
	updates := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	// Subscribed before the first fix, so no new device slips in between.
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		logf("watching %s: %v", dev, err)
	}}); err != nil {
		return fmt.Errorf("watching %s: %w", dev, err)
	}
	l, err := netlink.LinkByName(dev)
	if err != nil {
		close(done)
		return fmt.Errorf("%s: %w", dev, err)
	}
	if err := TxChecksumOff(dev); err != nil {
		close(done)
		return err
	}
	fixed := l.Attrs().Index
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-updates:
				if !ok {
					logf("watching %s: the netlink subscription closed; a new %s keeps its checksum offload", dev, dev)
					return
				}
				// Every change of the device is a NEWLINK (the offload change
				// itself too): act on a new device only.
				if u.Header.Type != unix.RTM_NEWLINK || u.Attrs() == nil || u.Attrs().Name != dev || u.Attrs().Index == fixed {
					continue
				}
				if err := TxChecksumOff(dev); err != nil {
					logf("%v", err)
					continue
				}
				fixed = u.Attrs().Index
				logf("%s was made again (index %d): tx checksum offload off", dev, fixed)
				if remade != nil {
					remade()
				}
			}
		}
	}()
	return nil
}

// TxChecksumOff turns off transmit checksum offload on dev, with the
// ethtool ioctl's legacy ETHTOOL_STXCSUM (the kernel maps it onto the
// device's features), so no ethtool binary is needed in the node.
func TxChecksumOff(dev string) error {
	if _, err := ethtoolValue(dev, unix.ETHTOOL_STXCSUM, 0); err != nil {
		return fmt.Errorf("turning tx checksum offload off on %s: %w", dev, err)
	}
	return nil
}

// TxChecksumOn reads whether transmit checksum offload is on for dev
// (ETHTOOL_GTXCSUM).
func TxChecksumOn(dev string) (bool, error) {
	v, err := ethtoolValue(dev, unix.ETHTOOL_GTXCSUM, 0)
	if err != nil {
		return false, fmt.Errorf("reading tx checksum offload of %s: %w", dev, err)
	}
	return v != 0, nil
}

// ethtoolValue does one ethtool ioctl that takes and returns a struct
// ethtool_value (cmd and data) on dev, and returns the data it left.
func ethtoolValue(dev string, cmd, data uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	// struct ethtool_value and struct ifreq with ifr_data pointing at it.
	val := struct{ Cmd, Data uint32 }{Cmd: cmd, Data: data}
	var ifr struct {
		Name [unix.IFNAMSIZ]byte
		Data uintptr
		_    [16]byte
	}
	copy(ifr.Name[:], dev)
	ifr.Data = uintptr(unsafe.Pointer(&val))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&val)
	if errno != 0 {
		return 0, errno
	}
	return val.Data, nil
}
