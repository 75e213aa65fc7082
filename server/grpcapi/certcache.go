package grpcapi

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"time"
)

const (
	// certCacheSize bounds the remembered chains: one per envoy for a
	// fleet of a quarter of a million. An entry is 48 bytes, about 120
	// with the map's overhead, so 30 MB at most. A larger fleet still
	// works: the envoys evicted are verified in full, as before the
	// cache.
	certCacheSize = 1 << 18
)

// certKey is the SHA-256 of a presented chain (see chainKey).
type certKey [sha256.Size]byte

// certWindow is when a verified chain stays valid: the latest NotBefore
// and the earliest NotAfter of its certificates, in Unix seconds.
type certWindow struct{ notBefore, notAfter int64 }

// contains tells whether now is within the window, with the bounds of
// crypto/x509 (valid from NotBefore to NotAfter, both included).
func (w certWindow) contains(now time.Time) bool {
	return !now.Before(time.Unix(w.notBefore, 0)) && !now.After(time.Unix(w.notAfter, 0))
}

// certCache remembers client certificate chains that verified against the
// CA, so that a chain verified once need not be verified again at every
// handshake. With a short server.grpc_idle_timeout every check-in is a new
// connection, and the ECDSA P-256 check of the envoy certificate's
// signature costs 50 to 80 µs, 6 to 12% of the server's CPU per check-in,
// although each envoy presents the same certificate every time.
//
// Why a remembered success is as good as a new verification:
//
//   - x509.Certificate.Verify is a function of the presented certificates,
//     the roots, the options and the current time. The key is the SHA-256
//     of every presented certificate (leaf and intermediates, see
//     chainKey) mixed with the generation of the roots; the other options
//     are constants; the roots are a private copy of the CA pool, replaced
//     (with a new generation) only when a CA rotation changes the trusted
//     CAs (Server.TrustChanged), so that an entry never outlives the
//     roots it verified against.
//   - Time is the only input left, and it only decides whether each
//     certificate of the chain is within its NotBefore..NotAfter. An entry
//     keeps the intersection of those windows for the chain that was
//     built, and every handshake checks the server's clock against it,
//     with the bounds of crypto/x509. Outside the window the entry is
//     dropped and the chain verified in full, which refuses it as before.
//   - Only successes are kept, so a refused chain is verified (and
//     refused) at every attempt.
//   - Nothing else is skipped: crypto/tls still checks the client's proof
//     of possession of the certificate's key, and the revocation and
//     "current certificate" checks (identify) still run at every handshake
//     and every request.
//
// A chain is only remembered when it holds nothing but the chain that was
// built (see builtFrom). VerifyConnection runs before the client has
// proven that it holds the key, and certificates are not secret: otherwise
// anyone with a copy of one envoy certificate could fill the cache with
// endless variants padded with unrelated certificates. This way the
// entries are bounded by the certificates our CA signed.
//
// When a shard is full, its expired entries are dropped and, if that is
// not enough, arbitrary others (in Go's random map order) until an eighth
// of the shard is free: an evicted envoy is simply verified in full at its
// next handshake.
type certCache struct {
	shardedMap[certKey, certWindow]
}

func newCertCache(max int) *certCache {
	c := &certCache{}
	c.init(max)
	return c
}

// valid tells whether the chain k verified before and now is within its
// window. An entry outside its window is dropped.
func (c *certCache) valid(k certKey, now time.Time) bool {
	s := c.shard(k[0])
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.m[k]
	if !ok {
		return false
	}
	if !w.contains(now) {
		delete(s.m, k)
		return false
	}
	return true
}

// add remembers that chain k verified and stays valid within w.
func (c *certCache) add(k certKey, w certWindow, now time.Time) {
	s := c.shard(k[0])
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; !ok && len(s.m) >= c.maxPerShard {
		keep := min(c.maxPerShard-c.maxPerShard/8, c.maxPerShard-1)
		nowS := now.Unix()
		for old, ow := range s.m {
			if ow.notAfter < nowS {
				delete(s.m, old)
			}
		}
		for old := range s.m {
			if len(s.m) <= keep {
				break
			}
			delete(s.m, old)
		}
	}
	s.m[k] = w
}

// chainKey hashes the presented certificates in order, each preceded by
// its length so that no two different lists hash the same bytes.
func chainKey(certs []*x509.Certificate) certKey {
	h := sha256.New()
	var n [4]byte
	for _, c := range certs {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var k certKey
	h.Sum(k[:0])
	return k
}

// chainWindow returns the window within which every certificate of chain
// is valid, rounded inwards to whole seconds (certificate times are whole
// seconds anyway).
func chainWindow(chain []*x509.Certificate) certWindow {
	w := certWindow{notBefore: math.MinInt64, notAfter: math.MaxInt64}
	for _, c := range chain {
		nb := c.NotBefore.Unix()
		if c.NotBefore.Nanosecond() != 0 {
			nb++
		}
		w.notBefore = max(w.notBefore, nb)
		w.notAfter = min(w.notAfter, c.NotAfter.Unix())
	}
	return w
}

// builtFrom returns the chain among chains that consists of exactly the
// presented certificates, possibly followed by the root from our pool, or
// nil when the client sent certificates the chain does not use.
func builtFrom(presented []*x509.Certificate, chains [][]*x509.Certificate) []*x509.Certificate {
	for _, chain := range chains {
		if len(presented) != len(chain) && len(presented) != len(chain)-1 {
			continue
		}
		same := true
		for i, c := range presented {
			if !c.Equal(chain[i]) {
				same = false
				break
			}
		}
		if same {
			return chain
		}
	}
	return nil
}

// verifyClientChain does what crypto/tls did with RequireAndVerifyClientCert
// (processCertsFromClient in crypto/tls/handshake_server.go): it verifies
// the leaf against our CA with the other presented certificates as
// intermediates, for client authentication, at the server's time, keeps
// only FIPS-approved chains in FIPS 140-3 mode, and fails with the same
// error type. Chains that verified before and are still within their
// validity window are not verified again.
func (s *Server) verifyClientChain(certs []*x509.Certificate, now time.Time) error {
	trust := s.trust.Load()
	var key certKey
	if s.certs != nil {
		key = chainKey(certs)
		// The generation of the roots is part of the key: a chain that
		// verified against roots since replaced (a CA rotation dropped a
		// CA) is verified again, against the roots of now.
		binary.BigEndian.PutUint64(key[len(key)-8:], binary.BigEndian.Uint64(key[len(key)-8:])^trust.gen)
		if s.certs.valid(key, now) {
			return nil
		}
	}
	opts := x509.VerifyOptions{
		Roots:         trust.roots,
		CurrentTime:   now,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := s.verifyChain(certs[0], opts)
	if err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	if fips140.Enabled() {
		chains = slices.DeleteFunc(chains, func(chain []*x509.Certificate) bool { return !fipsAllowedChain(chain) })
		if len(chains) == 0 {
			return &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: errors.New("tls: no FIPS compatible certificate chains found")}
		}
	}
	if s.certs != nil {
		if chain := builtFrom(certs, chains); chain != nil {
			s.certs.add(key, chainWindow(chain), now)
		}
	}
	return nil
}

// fipsAllowedChain is crypto/tls's rule in FIPS 140-3 mode
// (fipsAllowedChains, isCertificateAllowedFIPS in defaults_fips140.go):
// every key of the chain must be of an approved kind and size.
func fipsAllowedChain(chain []*x509.Certificate) bool {
	for _, c := range chain {
		switch k := c.PublicKey.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return false
			}
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() && k.Curve != elliptic.P521() {
				return false
			}
		case ed25519.PublicKey:
		default:
			return false
		}
	}
	return true
}
