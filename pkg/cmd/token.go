package cmd

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/usernode/usernode/pkg/bootstraptoken"
	"github.com/usernode/usernode/pkg/cluster"
	"github.com/usernode/usernode/pkg/node"
)

func init() { register(tokenCommand) }

func tokenCommand() *cobra.Command {
	var cf configFlags
	tokens := func() (*node.Tokens, error) {
		sb, err := cf.node()
		if err != nil {
			return nil, err
		}
		return node.NewTokens(sb)
	}
	tc := &cobra.Command{
		Use:   "token",
		Short: "Create, list and delete the bootstrap tokens other hosts join the cluster with",
		Long: `A bootstrap token lets another host's node join this cluster (as kubeadm's do):
it authenticates as system:bootstrap:ID and may only read cluster-info and
ask for its node's client certificate, which is approved automatically.
The join command ` + "`token create`" + ` prints also pins the cluster's CA
(sha256 of its public key): the joining host trusts nothing else.`,
	}
	cf.add(tc.PersistentFlags(), cluster.NodeFlags)

	var ttl time.Duration
	var description string
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a token and print the `usernode join` command that uses it",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl %s: give a positive duration, or 0 for a token that never expires", ttl)
			}
			ts, err := tokens()
			if err != nil {
				return err
			}
			tok, join, err := ts.Create(c.Context(), ttl, description)
			if err != nil {
				return err
			}
			if why := ts.LocalOnly(); why != "" {
				newLogger(c).Warnf("%s", why)
			}
			if !tok.Expires.IsZero() {
				newLogger(c).Infof("token %s expires %s", tok.ID, tok.Expires.Local().Format(time.RFC1123))
			}
			_, err = fmt.Fprintln(c.OutOrStdout(), join)
			return err
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", bootstraptoken.DefaultTTL, "how long the token is valid (0: forever, which a token that can add nodes should not be)")
	create.Flags().StringVar(&description, "description", "", "what the token is for, shown by `token list`")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the bootstrap tokens (IDs, expiry, description; not their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ts, err := tokens()
			if err != nil {
				return err
			}
			all, err := ts.List(c.Context())
			if err != nil {
				return err
			}
			type row struct {
				ID          string     `json:"id"`
				Expires     *time.Time `json:"expires,omitempty"`
				Description string     `json:"description,omitempty"`
			}
			rows := []row{}
			for _, t := range all {
				r := row{ID: t.ID, Description: t.Description}
				if !t.Expires.IsZero() {
					e := t.Expires
					r.Expires = &e
				}
				rows = append(rows, r)
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 2, 4, 2, ' ', 0)
			// A tabwriter buffers: a write error comes back from Flush.
			_, _ = fmt.Fprintln(tw, "ID\tEXPIRES\tDESCRIPTION")
			for _, r := range rows {
				exp := "never"
				if r.Expires != nil {
					exp = r.Expires.Local().Format(time.RFC3339)
				}
				_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\n", r.ID, exp, r.Description)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	del := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete tokens: they stop working at once",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ts, err := tokens()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := ts.Delete(c.Context(), id); err != nil {
					return err
				}
				newLogger(c).Infof("deleted token %s", id)
			}
			return nil
		},
	}
	tc.AddCommand(create, list, del)
	return tc
}
