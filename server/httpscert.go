package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// httpsCertCheckEvery bounds how often a handshake looks at the files.
const httpsCertCheckEvery = 10 * time.Second

// httpsCert is an operator-provided certificate for the HTTPS listener
// (server.tls.cert_file and key_file, e.g. from Let's Encrypt), re-read
// when its files change so that a renewal (ACME, certbot replacing the
// files or their symlinks) applies without a restart. A handshake looks at
// the files at most every httpsCertCheckEvery; Reload (SIGHUP) at once. A
// pair that does not load (a renewal half written, a key that does not
// match) is logged and the previous certificate kept.
type httpsCert struct {
	certFile, keyFile string
	log               *slog.Logger
	now               func() time.Time

	cur atomic.Pointer[tls.Certificate]

	mu        sync.Mutex
	lastCheck time.Time
	seen      [2]fileStamp // of the pair in cur, or of the last bad pair
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path) // follows symlinks, as certbot's live/ folder needs
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// newHTTPSCert loads the pair once; it must load at start.
func newHTTPSCert(certFile, keyFile string, log *slog.Logger, now func() time.Time) (*httpsCert, error) {
	if now == nil {
		now = time.Now
	}
	c := &httpsCert{certFile: certFile, keyFile: keyFile, log: log, now: now}
	stamps, err := c.stamps()
	if err != nil {
		return nil, fmt.Errorf("server.tls.cert_file: %w", err)
	}
	tc, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server.tls.cert_file and key_file: %w", err)
	}
	c.cur.Store(tc)
	c.seen, c.lastCheck = stamps, now()
	return c, nil
}

func (c *httpsCert) stamps() ([2]fileStamp, error) {
	var s [2]fileStamp
	var err error
	if s[0], err = stamp(c.certFile); err != nil {
		return s, err
	}
	s[1], err = stamp(c.keyFile)
	return s, err
}

func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	tc, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if tc.Leaf == nil {
		if tc.Leaf, err = x509.ParseCertificate(tc.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &tc, nil
}

// Leaf is the certificate presented now.
func (c *httpsCert) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// GetCertificate is tls.Config.GetCertificate.
func (c *httpsCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.check(false)
	return c.cur.Load(), nil
}

// Reload looks at the files now.
func (c *httpsCert) Reload() { c.check(true) }

func (c *httpsCert) check(force bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !force && now.Sub(c.lastCheck) < httpsCertCheckEvery {
		return
	}
	c.lastCheck = now
	stamps, err := c.stamps()
	if err != nil || stamps == c.seen {
		return // a file being replaced, or nothing new
	}
	c.seen = stamps
	tc, err := loadPair(c.certFile, c.keyFile)
	if err != nil {
		c.log.Warn("the HTTPS certificate changed but does not load; keeping the previous one", "file", c.certFile, "err", err)
		return
	}
	c.cur.Store(tc)
	c.log.Info("reloaded the HTTPS certificate", "file", c.certFile, "subject", tc.Leaf.Subject.String(),
		"issuer", tc.Leaf.Issuer.String(), "not_after", tc.Leaf.NotAfter)
}
