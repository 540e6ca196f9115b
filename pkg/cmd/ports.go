package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/network"
	"github.com/usernode/usernode/pkg/port"
	"github.com/usernode/usernode/pkg/port/api"
	"github.com/usernode/usernode/pkg/sandbox"
)

func init() {
	register(portCommand)
}

func portCommand() *cobra.Command {
	var cf configFlags
	client := func() (*api.Client, error) {
		cfg, err := cf.node()
		if err != nil {
			return nil, err
		}
		st, err := sandbox.Running(cfg.RuntimeDir)
		if err != nil {
			return nil, err
		}
		return api.NewClient(st.PortSocket), nil
	}
	pc := &cobra.Command{Use: "port", Short: "Add, remove and list ports forwarded from the host into a running node"}
	cf.add(pc.PersistentFlags(), cluster.NodeFlags)
	change := func(use, short string, op func(*api.Client, context.Context, port.Spec) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " [HOST_IP:]HOST_PORT:NODE_PORT[/tcp|udp]...",
			Short: short,
			Args:  cobra.MinimumNArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				specs, err := parsePorts(args)
				if err != nil {
					return err
				}
				cl, err := client()
				if err != nil {
					return err
				}
				for _, s := range specs {
					if err := op(cl, c.Context(), s); err != nil {
						return err
					}
				}
				return nil
			},
		}
	}
	pc.AddCommand(change("add", "Forward host ports into the node", (*api.Client).Add))
	pc.AddCommand(change("rm", "Stop forwarding host ports", (*api.Client).Remove))
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the forwarded ports",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			specs, err := cl.List(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(c.OutOrStdout()).Encode(specs)
			}
			for _, s := range specs {
				if _, err := fmt.Fprintln(c.OutOrStdout(), s.String()); err != nil {
					return err
				}
			}
			return nil
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	pc.AddCommand(ls)
	return pc
}

func parsePorts(specs []string) ([]port.Spec, error) {
	var out []port.Spec
	for _, s := range specs {
		p, err := port.ParseSpec(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func netDriverNames() string {
	return strings.Join(network.Names(), ", ")
}
