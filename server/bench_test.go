package server_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/server/servertest"
	"github.com/vigo-enroll/vigo/server/token"
)

// curlClient posts like curl: a new TLS connection per request, one
// HTTP/1.1 request with "Connection: close", the response read to its end.
// It is the load generator, on the same two cores as the server, so it does
// no more than curl does (net/http's Transport adds two goroutines and a
// connection pool per request on top, which would be counted against the
// server).
type curlClient struct {
	cfg  *tls.Config
	addr string
}

func newConnClient(in *servertest.Instance) *curlClient {
	return &curlClient{
		cfg:  &tls.Config{RootCAs: in.CAPool(), ServerName: "127.0.0.1"},
		addr: in.APIAddr().String(),
	}
}

func (c *curlClient) post(path string, body []byte) (int, []byte, error) {
	conn, err := tls.Dial("tcp", c.addr, c.cfg)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	req := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, c.addr, len(body), body)
	if _, err := conn.Write(req); err != nil {
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, data, err
}

func prepare(b *testing.B, n int, host func(i int) string, tok func(i int) string) [][]byte {
	bodies := make([][]byte, n)
	for i := range bodies {
		r := servertest.NewIdentity(b, host(i)).Req
		if tok != nil {
			r.Token = tok(i)
		}
		bodies[i], _ = json.Marshal(r)
	}
	return bodies
}

func post(b *testing.B, c *curlClient, body []byte) {
	code, data, err := c.post("/api/v1/bootstrap/register", body)
	if err != nil {
		b.Error(err)
		return
	}
	if code != 200 {
		b.Errorf("HTTP %d %s", code, data)
	}
}

// BenchmarkRegistration compares, in one run against one server, bare TLS
// handshakes with registrations on the trusted path (one new connection
// each) and on the token path.
func BenchmarkRegistration(b *testing.B) {
	in := servertest.Start(b, servertest.Options{})
	var seq atomic.Int64

	b.Run("tls-handshake", func(b *testing.B) {
		cfg := &tls.Config{RootCAs: in.CAPool(), ServerName: "127.0.0.1"}
		addr := in.APIAddr().String()
		b.SetParallelism(benchPar)
		m := startCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c, err := tls.Dial("tcp", addr, cfg)
				if err != nil {
					b.Error(err)
					return
				}
				c.Close()
			}
		})
		m.report(b)
	})
	b.Run("register-trusted", func(b *testing.B) {
		base := seq.Add(int64(b.N)) - int64(b.N)
		bodies := prepare(b, b.N, func(i int) string { return fmt.Sprintf("h%d.trusted.test", base+int64(i)) }, nil)
		c := newConnClient(in)
		var next atomic.Int64
		b.SetParallelism(benchPar)
		m := startCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				post(b, c, bodies[next.Add(1)-1])
			}
		})
		m.report(b)
	})
	// The token path is bounded by bcrypt: the same number of concurrent
	// compares at the cost the server uses, as the reference.
	b.Run("bcrypt-compare", func(b *testing.B) {
		tok := token.Generate()
		hash, err := token.Hash(tok)
		if err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(benchPar)
		m := startCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !token.Compare(hash, tok) {
					b.Error("compare failed")
				}
			}
		})
		m.report(b)
	})
	b.Run("register-token", func(b *testing.B) {
		base := seq.Add(int64(b.N)) - int64(b.N)
		toks := make([]string, b.N)
		for i := range toks {
			toks[i] = in.Token(b, fmt.Sprintf("t%d.example.com", base+int64(i)), "").Token
		}
		bodies := prepare(b, b.N, func(i int) string { return fmt.Sprintf("t%d.example.com", base+int64(i)) }, func(i int) string { return toks[i] })
		c := newConnClient(in)
		var next atomic.Int64
		b.SetParallelism(benchPar)
		m := startCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				post(b, c, bodies[next.Add(1)-1])
			}
		})
		m.report(b)
	})
}

// cpuMeter reports, beside ns/op, the process CPU time per operation and
// how busy the two cores were: a ratio of rates only compares server work
// when both sides keep the machine equally busy.
type cpuMeter struct {
	start time.Time
	cpu   time.Duration
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU(b *testing.B) *cpuMeter {
	b.ResetTimer()
	return &cpuMeter{start: time.Now(), cpu: processCPU()}
}

func (m *cpuMeter) report(b *testing.B) {
	b.StopTimer()
	cpu, wall := processCPU()-m.cpu, time.Since(m.start)
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "cpu-%")
}

// benchPar is the number of concurrent clients per core (32 in all on
// this 2-core machine), enough to keep the server busy while clients wait
// on the network and on group commits.
var benchPar = 16
