package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// containerEnv is set by the container image (Dockerfile): the server then
// checks that its data folder outlives the container.
const containerEnv = "VIGO_CONTAINER"

func readMountInfo() []byte {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return b
}

// anonymousVolume matches the source of a Docker volume without a name:
// the engine names it with 64 hex digits (/var/lib/docker/volumes/ID/_data).
var anonymousVolume = regexp.MustCompile(`/volumes/[0-9a-f]{64}/_data$`)

// dataVolumeWarning says when the data folder is not kept beyond the
// container: not a mount at all (the container's writable layer), or an
// anonymous volume, which `docker run --rm` deletes and a new container
// does not get back. A named volume or a bind mount says nothing.
// mountinfo is /proc/self/mountinfo (proc(5): the 4th field is the root of
// the mount within its file system, the 5th the mount point).
func dataVolumeWarning(mountinfo []byte, dataDir string) string {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return ""
	}
	root, found := "", false
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMount(f[4]) != dir {
			continue
		}
		root, found = unescapeMount(f[3]), true // the last mount on a path wins
	}
	switch {
	case !found:
		return fmt.Sprintf("the data folder %s is not a volume: the CA, the admin token and every envoy are lost with this container; run it with -v vigo:%s", dir, dir)
	case anonymousVolume.MatchString(root):
		return fmt.Sprintf("the data folder %s is an anonymous volume: the CA, the admin token and every envoy are lost with this container (docker run --rm) and a new container does not get them back; run it with a named volume: -v vigo:%s", dir, dir)
	}
	return ""
}

// unescapeMount undoes the octal escapes of mountinfo (\040 is a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func newHealthcheckCmd(o *opts, stdout io.Writer) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the local server is ready (GET /readyz), 1 otherwise: the container HEALTHCHECK",
		Long: `healthcheck asks the server on this host (server.api_listen, on loopback) whether it is
ready and exits 0 when it answers 200, 1 otherwise with the reason. It reads the same
configuration as serve. A container image has no curl: this is its HEALTHCHECK.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.load()
			if err != nil {
				return &codeError{code: 2, err: err}
			}
			_, port, err := net.SplitHostPort(cfg.Server.APIListen)
			if err != nil {
				return &codeError{code: 2, err: fmt.Errorf("server.api_listen %q: %w", cfg.Server.APIListen, err)}
			}
			url := "https://" + net.JoinHostPort("127.0.0.1", port) + "/readyz"
			c := &http.Client{Timeout: timeout, Transport: &http.Transport{
				// The server's own loopback address: nothing secret is
				// sent and only the status is read, so its certificate
				// (which may not name 127.0.0.1) is not checked.
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
			}}
			resp, err := c.Get(url)
			if err != nil {
				return fmt.Errorf("not ready: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready: %s: %s", resp.Status, strings.TrimSpace(string(body)))
			}
			fmt.Fprintf(stdout, "ready: %s\n", strings.TrimSpace(string(body)))
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}
