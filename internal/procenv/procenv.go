// Package procenv is the environment usernode gives the processes it
// starts (the node's components, helpers, the systemd unit): a fixed PATH,
// not the caller's. A regular user's PATH often lacks the sbin dirs, where
// Debian puts runc, iptables and the like, and the node must not depend on
// how the user's shell is set up.
package procenv

// Path is the PATH of every process usernode starts.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Root is the base environment of a process run as the node's root.
func Root() []string { return []string{"PATH=" + Path, "HOME=/root"} }
