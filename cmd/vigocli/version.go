package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/buildinfo"
)

// ownBuild is this program's build.
func (g *globals) ownBuild() buildinfo.Info {
	if g.build == (buildinfo.Info{}) {
		g.build = buildinfo.Get()
	}
	return g.build
}

// checkBuild warns once, on stderr, when the server that answered is
// another build than this vigocli: vet, explain and diff here may then
// judge policy differently from the server.
func (g *globals) checkBuild(h http.Header) {
	v := h.Get(apiv1.HeaderServerVersion)
	if g.buildWarned || v == "" {
		return
	}
	srv := buildinfo.Info{Version: v, Commit: h.Get(apiv1.HeaderServerCommit)}
	if !g.ownBuild().Differs(srv) {
		return
	}
	g.buildWarned = true
	fmt.Fprintf(g.stderr, "vigocli: warning: %s\n", buildAdvice(g.ownBuild(), srv))
}

// buildAdvice says that two builds differ and how to install the server's.
func buildAdvice(own, srv buildinfo.Info) string {
	msg := fmt.Sprintf("this vigocli is %s, the server is %s: policy vet, explain and diff here may judge differently from the server",
		buildName(own), buildName(srv))
	if ref := srv.Ref(); ref != "" {
		msg += "; install the server's build: go install github.com/vigo-enroll/vigo/cmd/vigocli@" + ref
	}
	return msg
}

// buildName names a build by its version and abbreviated commit.
func buildName(b buildinfo.Info) string {
	if b.Commit == "" {
		return b.Version
	}
	c := b.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	return fmt.Sprintf("%s (commit %s)", b.Version, c)
}

func newVersionCmd(g *globals) *cobra.Command {
	var checkServer bool
	cmd := &cobra.Command{
		Use:   "version [--check-server]",
		Short: "Print vigocli's version, commit and Go version; --check-server compares them with the server's",
		Long: `Version prints the build of this vigocli (-o json for a JSON object). With --check-server
it also asks the server for its build (GET /api/v1/version, any admin token) and exits 1
when they differ, naming the go install command that installs the server's build: CI
should vet policy with the code the server runs. Every other command that talks to the
server warns on stderr when the builds differ.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			own := g.ownBuild()
			var srv *buildinfo.Info
			if checkServer {
				c, err := g.client()
				if err != nil {
					return err
				}
				g.buildWarned = true // told below instead
				var b buildinfo.Info
				if err := c.do(cmd.Context(), "GET", "/api/v1/version", nil, &b); err != nil {
					return err
				}
				srv = &b
			}
			if g.structured() {
				out := struct {
					Client buildinfo.Info  `json:"client"`
					Server *buildinfo.Info `json:"server,omitempty"`
				}{own, srv}
				if err := g.printData(out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "vigocli %s\n", own)
				if srv != nil {
					fmt.Fprintf(g.stdout, "server  %s\n", *srv)
				}
			}
			if srv != nil && own.Differs(*srv) {
				return &codeError{code: 1, err: fmt.Errorf("%s", buildAdvice(own, *srv))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&checkServer, "check-server", false, "also ask the server for its build; exit 1 when it differs")
	return printsData(cmd)
}
