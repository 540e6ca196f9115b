// Package cmd holds usernode's cobra commands. Each command is a thin layer
// over a library package; nothing here should need a unit test of its own.
package cmd

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// ExitError carries an exit code out of a command without printing anything
// more; the command has already told the user what went wrong.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// subcommands lets each file of this package add its commands without a
// central list that every change touches.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

// NewRoot builds the command tree.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "usernode",
		Short:         "Run a Kubernetes node as an unprivileged user",
		Long:          "usernode runs real Kubernetes node components (kubelet, containerd, runc, CNI, kube-proxy)\nas a regular user inside Linux user namespaces (KEP-2033, \"rootless mode\").",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().IntP("verbose", "v", 0, "show debug output up to this level")
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	return root
}

// Main runs the CLI and returns the process exit code.
func Main(args []string) int {
	root := NewRoot()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintln(os.Stderr, "usernode:", err)
	return 1
}
