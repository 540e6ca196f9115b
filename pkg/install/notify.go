package install

import (
	"net"
	"os"
)

// Notify sends state (e.g. "READY=1") to systemd's notification socket,
// $NOTIFY_SOCKET, as sd_notify(3) does. Outside a Type=notify unit the
// variable is unset and Notify does nothing.
func Notify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	// A leading '@' names a socket in the abstract namespace.
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// NotifyReady tells systemd the node is Ready; `systemctl --user start`
// returns then. Errors are ignored: the unit's start timeout reports a
// notification that never arrives.
func NotifyReady() { _ = Notify("READY=1\nSTATUS=node Ready") }
