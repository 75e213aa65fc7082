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
	// CPUSeconds is the CPU time (user and system) the server used
	// during the check-in phase.
	CPUSeconds float64 `json:"cpu_seconds"`
	// Error is set when no sample could be taken.
	Error string `json:"error,omitempty"`
}

// sample is one reading of a server process.
type sample struct {
	rss int64   // bytes
	cpu float64 // seconds since the process started
}

// rssProbe samples one server's RSS.
type rssProbe struct {
	name, source string
	sample       func(ctx context.Context) (sample, error)
}

// procRSS returns a probe reading VmRSS from /proc/PID/status and the CPU
// time from /proc/PID/stat (Linux).
func procRSS(pid int) rssProbe {
	path := fmt.Sprintf("/proc/%d/status", pid)
	return rssProbe{name: "pid " + strconv.Itoa(pid), source: path, sample: func(context.Context) (sample, error) {
		f, err := os.Open(path)
		if err != nil {
			return sample{}, fmt.Errorf("read server RSS: %w", err)
		}
		defer f.Close()
		rss, err := parseProcStatus(f)
		if err != nil {
			return sample{}, err
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return sample{}, fmt.Errorf("read server CPU: %w", err)
		}
		cpu, err := parseProcStatCPU(string(stat))
		return sample{rss: rss, cpu: cpu}, err
	}}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// parseProcStatCPU returns utime+stime of a /proc/PID/stat line, in
// seconds. The command name (field 2) may hold spaces: fields are counted
// after its closing parenthesis.
func parseProcStatCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("read server CPU: malformed /proc stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("read server CPU: short /proc stat")
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read server CPU: %w", err)
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, nil
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
	return rssProbe{name: base.String(), source: "GET /metrics", sample: func(ctx context.Context) (sample, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return sample{}, fmt.Errorf("read server RSS: %w", err)
		}
		if adminToken != "" {
			req.Header.Set("Authorization", "Bearer "+adminToken)
		}
		res, err := c.Do(req)
		if err != nil {
			return sample{}, fmt.Errorf("read server RSS: %w", err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return sample{}, fmt.Errorf("read server RSS: GET /metrics: HTTP %s", res.Status)
		}
		return parseMetrics(io.LimitReader(res.Body, 16<<20))
	}}
}

// parseMetrics finds process_resident_memory_bytes and
// process_cpu_seconds_total in a Prometheus text exposition.
func parseMetrics(r io.Reader) (sample, error) {
	var out sample
	var haveRSS bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || (f[0] != "process_resident_memory_bytes" && f[0] != "process_cpu_seconds_total") {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return sample{}, fmt.Errorf("read server RSS: %w", err)
		}
		if f[0] == "process_cpu_seconds_total" {
			out.cpu = v
		} else {
			out.rss, haveRSS = int64(v), true
		}
	}
	if err := sc.Err(); err != nil {
		return sample{}, fmt.Errorf("read server RSS: %w", err)
	}
	if !haveRSS {
		return sample{}, errors.New("read server RSS: no process_resident_memory_bytes in /metrics")
	}
	return out, nil
}
