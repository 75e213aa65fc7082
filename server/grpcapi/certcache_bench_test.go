//go:build unix

package grpcapi

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/vigo-enroll/vigo/schemas/agentpb"
	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// BenchmarkNewConnectionCheckin measures what a fleet with a short
// server.grpc_idle_timeout costs the server: per iteration one envoy opens
// a new mTLS connection, checks in once and closes it. The server runs in
// a child process (this test binary, see TestBenchServerProcess) so that
// its CPU time is measured apart from the clients'; "server-cpu-µs/op" is
// the number to compare. "full" is a full handshake per connection with
// the server as configured, "full-nocache" verifies every client chain in
// full, as crypto/tls did, and "resume" resumes each envoy's TLS session,
// as agents do; "-x25519" uses the server option key_exchange: x25519
// instead of the default hybrid post-quantum exchange. Every envoy
// connects once before the measurement, as it would have a minute earlier.
// Run it with:
//
//	go test -run '^$' -bench NewConnectionCheckin -benchtime 400x -count 5 ./server/grpcapi
func BenchmarkNewConnectionCheckin(b *testing.B) {
	const envoys = 64
	dir := b.TempDir()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "vigo.db"), sqlitestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	authority, err := ca.LoadOrCreate(ca.Config{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(authority.Certificate())
	type envoy struct {
		uuid     string
		hostname string
		key      ed25519.PrivateKey
		conf     *tls.Config
	}
	fleet := make([]envoy, envoys)
	now := time.Now()
	for i := range fleet {
		pub, key, _ := ed25519.GenerateKey(rand.Reader)
		uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		cert, err := authority.SignEnvoy(ca.EnvoyParams{PublicKey: pub, Hostname: fmt.Sprintf("bench%d.example.com", i), UUID: uuid, NotAfter: now.Add(24 * time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Enroll(ctx, store.EnrollParams{
			Envoy: store.Envoy{UUID: uuid, Hostname: cert.Subject.CommonName, PublicKey: pub, CertSerial: ca.SerialHex(cert), CertNotAfter: cert.NotAfter, Method: "approved"},
			Now:   now,
		}); err != nil {
			b.Fatal(err)
		}
		fleet[i] = envoy{uuid: uuid, hostname: cert.Subject.CommonName, key: key, conf: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "127.0.0.1",
			Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}}
	}
	st.Close()

	checkin := func(addr string, e envoy, resume bool) error {
		conf := e.conf
		if !resume {
			conf = conf.Clone()
			conf.ClientSessionCache = nil
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = agentpb.NewAgentServiceClient(conn).Checkin(ctx, signedCheckin(testEnvoy{uuid: e.uuid, hostname: e.hostname, key: e.key}, time.Now()))
		return err
	}
	for _, mode := range []string{"full", "full-nocache", "resume", "full-x25519", "resume-x25519"} {
		b.Run(mode, func(b *testing.B) {
			resume := strings.HasPrefix(mode, "resume")
			for i := range fleet {
				fleet[i].conf.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			srv := startBenchServer(b, dir, mode)
			for _, e := range fleet {
				if err := checkin(srv.addr, e, resume); err != nil {
					b.Fatal(err)
				}
			}
			cpu0 := srv.cpu()
			i := 0
			for b.Loop() {
				if err := checkin(srv.addr, fleet[i%envoys], resume); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64((srv.cpu()-cpu0).Microseconds())/float64(i), "server-cpu-µs/op")
		})
	}
}

// benchServer is a server child process: it prints its address, then
// answers each line it reads with the CPU time it has used.
type benchServer struct {
	b    *testing.B
	addr string
	in   io.WriteCloser
	out  *bufio.Scanner
}

func startBenchServer(b *testing.B, dir, mode string) *benchServer {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "VIGO_BENCH_SERVER_DIR="+dir, "VIGO_BENCH_SERVER_MODE="+mode)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close() // the child stops at the end of its input
		_ = cmd.Wait()
	})
	s := &benchServer{b: b, in: in, out: bufio.NewScanner(out)}
	s.addr = s.read("addr ")
	return s
}

// read returns the rest of the next line of the child's output that
// starts with prefix.
func (s *benchServer) read(prefix string) string {
	for s.out.Scan() {
		if v, ok := strings.CutPrefix(s.out.Text(), prefix); ok {
			return v
		}
	}
	s.b.Fatalf("server process: no %q line (err %v)", prefix, s.out.Err())
	return ""
}

func (s *benchServer) cpu() time.Duration {
	if _, err := io.WriteString(s.in, "cpu\n"); err != nil {
		s.b.Fatal(err)
	}
	ns, err := strconv.ParseInt(s.read("cpu "), 10, 64)
	if err != nil {
		s.b.Fatal(err)
	}
	return time.Duration(ns)
}

// TestBenchServerProcess is the server of BenchmarkNewConnectionCheckin,
// in a process of its own; it does nothing in a normal test run.
func TestBenchServerProcess(t *testing.T) {
	dir := os.Getenv("VIGO_BENCH_SERVER_DIR")
	if dir == "" {
		return // not a test: the server process of BenchmarkNewConnectionCheckin
	}
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "vigo.db"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	authority, err := ca.LoadOrCreate(ca.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	mode := os.Getenv("VIGO_BENCH_SERVER_MODE")
	cfg := Config{Store: st, CA: authority, SigningKey: key}
	if strings.HasSuffix(mode, "-x25519") {
		cfg.KeyExchange = KeyExchangeX25519
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if mode == "full-nocache" {
		srv.certs = nil
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	// VIGO_BENCH_SERVER_PROFILE=DIR writes the server's CPU profile of each
	// mode to DIR/MODE.pprof.
	if d := os.Getenv("VIGO_BENCH_SERVER_PROFILE"); d != "" {
		f, err := os.Create(filepath.Join(d, mode+".pprof"))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	fmt.Printf("addr %s\n", ln.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("cpu %d\n", ru.Utime.Nano()+ru.Stime.Nano())
	}
}
