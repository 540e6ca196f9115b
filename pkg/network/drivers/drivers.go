// Package drivers registers every network driver with pkg/network. Import
// it for its side effect; the driver packages cannot be imported by
// pkg/network itself without an import cycle.
package drivers

import (
	// Imported for their init functions, which register each driver.
	_ "github.com/usernode/usernode/pkg/network/lxcusernic"
	_ "github.com/usernode/usernode/pkg/network/none"
	_ "github.com/usernode/usernode/pkg/network/pasta"
	_ "github.com/usernode/usernode/pkg/network/slirp4netns"
)
