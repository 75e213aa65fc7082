package grpcapi

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/vigo-enroll/vigo/server/ca"
)

// TicketKeyPeriod is how long a session ticket key issues tickets; a key
// still opens tickets until two periods after its creation, so a ticket
// lives at most two periods. An hour bounds what a stolen key opens (the
// tickets of the last two hours, which still need the envoy's current,
// unrevoked certificate: see unwrapSession) while an agent checking in
// every few minutes resumes nearly always.
const TicketKeyPeriod = time.Hour

// ticketKeys encrypt session tickets (AES-256-GCM) with a key that rotates
// every period, in memory only. Replicas do not share them: a ticket
// presented to another replica does not decrypt there and the handshake is
// simply a full one. Sharing the keys would save that handshake after a
// failover at the price of a secret to distribute and rotate across
// replicas; a full handshake costs about a millisecond of CPU, once.
type ticketKeys struct {
	period time.Duration
	now    func() time.Time

	mu        sync.Mutex
	cur, prev ticketKey
}

type ticketKey struct {
	id      uint32
	aead    cipher.AEAD
	created time.Time
}

func newTicketKeys(period time.Duration, now func() time.Time) *ticketKeys {
	return &ticketKeys{period: period, now: now}
}

func newTicketKey(now time.Time) ticketKey {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	block, _ := aes.NewCipher(raw[:]) // a 32-byte key never fails
	aead, _ := cipher.NewGCM(block)
	var id [4]byte
	_, _ = rand.Read(id[:])
	return ticketKey{id: binary.BigEndian.Uint32(id[:]), aead: aead, created: now}
}

// current returns the key that issues tickets now, rotating when its
// period is over.
func (k *ticketKeys) current() ticketKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	switch {
	case k.cur.aead == nil:
		k.cur = newTicketKey(now)
	case now.Sub(k.cur.created) >= k.period:
		k.prev, k.cur = k.cur, newTicketKey(now)
	}
	if k.prev.aead != nil && now.Sub(k.prev.created) >= 2*k.period {
		k.prev = ticketKey{} // its tickets are older than two periods
	}
	return k.cur
}

// lookup returns the key with this id if it may still open tickets: the
// current key, or the previous one for two periods from its creation.
func (k *ticketKeys) lookup(id uint32) (ticketKey, bool) {
	k.current() // rotates, so that an expired key is not found
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range []ticketKey{k.cur, k.prev} {
		if c.aead != nil && c.id == id {
			return c, true
		}
	}
	return ticketKey{}, false
}

// seal encrypts a ticket: key id, nonce, then the sealed state.
func (k *ticketKeys) seal(plain []byte) []byte {
	key := k.current()
	id := binary.BigEndian.AppendUint32(nil, key.id) // also the additional data
	nonce := make([]byte, key.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := append(append(make([]byte, 0, len(id)+len(nonce)+len(plain)+key.aead.Overhead()), id...), nonce...)
	// The additional data is its own slice: cipher.AEAD forbids it to
	// overlap dst.
	return key.aead.Seal(out, nonce, plain, id)
}

// open decrypts a ticket, or fails for one this server did not seal with
// a current key.
func (k *ticketKeys) open(ticket []byte) ([]byte, error) {
	if len(ticket) < 4 {
		return nil, errors.New("short ticket")
	}
	key, ok := k.lookup(binary.BigEndian.Uint32(ticket))
	if !ok {
		return nil, errors.New("unknown or expired ticket key")
	}
	n := key.aead.NonceSize()
	if len(ticket) < 4+n {
		return nil, errors.New("short ticket")
	}
	return key.aead.Open(nil, ticket[4:4+n], ticket[4+n:], ticket[:4])
}

// ticketIdentity is what a ticket remembers of the envoy it was issued to,
// to judge it again before resuming.
type ticketIdentity struct {
	UUID     string    `json:"u"`
	Serial   string    `json:"s"`
	NotAfter time.Time `json:"n"`
}

// wrapSession seals a session into a ticket, with the identity of the
// envoy whose full handshake it follows.
func (s *Server) wrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, errors.New("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	uuid, err := ca.EnvoyUUID(leaf)
	if err != nil {
		return nil, err
	}
	id, err := json.Marshal(ticketIdentity{UUID: uuid, Serial: ca.SerialHex(leaf), NotAfter: leaf.NotAfter})
	if err != nil {
		return nil, err
	}
	ss.Extra = append(ss.Extra, id)
	b, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	return s.tickets.seal(b), nil
}

// unwrapSession opens a ticket and resumes its session only while
// everything a full handshake would check still holds: the envoy is
// known and not revoked, the ticket's certificate is its current one, and
// that certificate has not expired. Otherwise (and for a ticket this
// server cannot open: another replica's, or older than two key periods)
// it returns nil, nil: crypto/tls then makes a full handshake, in which
// the client presents its current certificate and verifyConnection judges
// it as always. verifyConnection also runs on a resumed connection, with
// the certificate the ticket remembers: this check is what lets a renewed
// or revoked envoy fall back to a full handshake instead of being refused
// on its old session.
func (s *Server) unwrapSession(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	plain, err := s.tickets.open(identity)
	if err != nil {
		s.m.resumptions.WithLabelValues("unknown_ticket").Inc()
		return nil, nil
	}
	ss, err := tls.ParseSessionState(plain)
	if err != nil || len(ss.Extra) == 0 {
		s.m.resumptions.WithLabelValues("unknown_ticket").Inc()
		return nil, nil
	}
	var id ticketIdentity
	if err := json.Unmarshal(ss.Extra[len(ss.Extra)-1], &id); err != nil {
		s.m.resumptions.WithLabelValues("unknown_ticket").Inc()
		return nil, nil
	}
	if !s.now().Before(id.NotAfter) {
		s.m.resumptions.WithLabelValues("declined").Inc()
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	en, err := s.dir.get(ctx, id.UUID)
	if err == nil {
		en, err = s.dir.confirm(ctx, en, id.Serial)
	}
	if err != nil || judge(en, id.UUID, id.Serial) != nil {
		s.m.resumptions.WithLabelValues("declined").Inc()
		return nil, nil
	}
	s.m.resumptions.WithLabelValues("accepted").Inc()
	return ss, nil
}
