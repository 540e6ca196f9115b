// Command usernode runs Kubernetes node components as an unprivileged user.
package main

import (
	"os"

	"github.com/usernode/usernode/pkg/cmd"
)

func main() {
	os.Exit(cmd.Main(os.Args[1:]))
}
