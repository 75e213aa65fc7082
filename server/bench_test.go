package server_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/vigo-enroll/vigo/server/servertest"
	"github.com/vigo-enroll/vigo/server/token"
)

// newConnClient makes a client that opens a new TLS connection per request,
// as curl does.
func newConnClient(in *servertest.Instance) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: in.CAPool(), ServerName: "127.0.0.1"},
		DisableKeepAlives: true,
	}}
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

func post(b *testing.B, c *http.Client, url string, body []byte) {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		b.Error(err)
		return
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Errorf("HTTP %d %s", resp.StatusCode, data)
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
	})
	b.Run("register-trusted", func(b *testing.B) {
		base := seq.Add(int64(b.N)) - int64(b.N)
		bodies := prepare(b, b.N, func(i int) string { return fmt.Sprintf("h%d.trusted.test", base+int64(i)) }, nil)
		c := newConnClient(in)
		var next atomic.Int64
		b.SetParallelism(benchPar)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				post(b, c, in.URL+"/api/v1/bootstrap/register", bodies[next.Add(1)-1])
			}
		})
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
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !token.Compare(hash, tok) {
					b.Error("compare failed")
				}
			}
		})
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
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				post(b, c, in.URL+"/api/v1/bootstrap/register", bodies[next.Add(1)-1])
			}
		})
	})
}

// benchPar is the number of concurrent clients per core (32 in all on
// this 2-core machine), enough to keep the server busy while clients wait
// on the network and on group commits.
var benchPar = 16
