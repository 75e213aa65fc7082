package fleetsim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// RSS is the resident memory of one server process.
type RSS struct {
	// Server is the base URL, or "pid N" for a --server-pid.
	Server string `json:"server"`
	// Source says where the figure comes from: "/proc/N/status" or
	// "GET /metrics".
	Source string `json:"source"`
	// Bytes is the last sample, taken at the end of the check-in phase.
	Bytes int64 `json:"bytes"`
	// Peak is the largest sample taken during the check-in phase.
	Peak int64 `json:"peak_bytes"`
	// Error is set when no sample could be taken.
	Error string `json:"error,omitempty"`
}

// rssProbe samples one server's RSS.
type rssProbe struct {
	name, source string
	sample       func(ctx context.Context) (int64, error)
}

// procRSS returns a probe reading VmRSS from /proc/PID/status (Linux).
func procRSS(pid int) rssProbe {
	path := fmt.Sprintf("/proc/%d/status", pid)
	return rssProbe{name: "pid " + strconv.Itoa(pid), source: path, sample: func(context.Context) (int64, error) {
		f, err := os.Open(path)
		if err != nil {
			return 0, fmt.Errorf("read server RSS: %w", err)
		}
		defer f.Close()
		return parseProcStatus(f)
	}}
}

// parseProcStatus returns VmRSS in bytes.
func parseProcStatus(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != "VmRSS" {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("read server RSS: unexpected VmRSS line %q", sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read server RSS: %w", err)
		}
		return n * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read server RSS: %w", err)
	}
	return 0, errors.New("read server RSS: no VmRSS in /proc status")
}

// metricsRSS returns a probe reading process_resident_memory_bytes from
// the server's GET /metrics, with the admin token (any role) when given
// (the Prometheus process collector reads the same /proc figure inside the
// server).
func metricsRSS(c *http.Client, base *url.URL, adminToken string) rssProbe {
	u := base.JoinPath("/metrics").String()
	return rssProbe{name: base.String(), source: "GET /metrics", sample: func(ctx context.Context) (int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return 0, fmt.Errorf("read server RSS: %w", err)
		}
		if adminToken != "" {
			req.Header.Set("Authorization", "Bearer "+adminToken)
		}
		res, err := c.Do(req)
		if err != nil {
			return 0, fmt.Errorf("read server RSS: %w", err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("read server RSS: GET /metrics: HTTP %s", res.Status)
		}
		return parseMetricsRSS(io.LimitReader(res.Body, 16<<20))
	}}
}

// parseMetricsRSS finds process_resident_memory_bytes in a Prometheus
// text exposition.
func parseMetricsRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "process_resident_memory_bytes" {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0, fmt.Errorf("read server RSS: %w", err)
		}
		return int64(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read server RSS: %w", err)
	}
	return 0, errors.New("read server RSS: no process_resident_memory_bytes in /metrics")
}
