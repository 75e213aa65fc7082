package agentpb

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
)

// Context strings of the signed messages (see agent.proto).
const (
	checkinRequestContext  = "vigo-checkin-request-v1\n"
	checkinResponseContext = "vigo-checkin-response-v1\n"
	// allowDowngradeTrailer starts the part of a response's signed bytes
	// that says which actions allow a downgrade.
	allowDowngradeTrailer = "allow_downgrade\n"
)

// NonceSize is the exact length of CheckinRequest.Nonce.
const NonceSize = 16

type encoder []byte

func (e encoder) str(s string) encoder {
	e = binary.BigEndian.AppendUint32(e, uint32(len(s)))
	return append(e, s...)
}

func (e encoder) bytes(b []byte) encoder {
	e = binary.BigEndian.AppendUint32(e, uint32(len(b)))
	return append(e, b...)
}

func (e encoder) i64(v int64) encoder { return binary.BigEndian.AppendUint64(e, uint64(v)) }

func (e encoder) u32(v uint32) encoder { return binary.BigEndian.AppendUint32(e, v) }

// SigningBytes returns the canonical encoding of r that its Signature
// covers: the context string "vigo-checkin-request-v1\n", then uuid,
// hostname, agent_version, os, arch, timestamp_unix_nano and nonce.
func (r *CheckinRequest) SigningBytes() []byte {
	n := len(checkinRequestContext) + 6*4 + 8 + len(r.GetUuid()) + len(r.GetHostname()) +
		len(r.GetAgentVersion()) + len(r.GetOs()) + len(r.GetArch()) + len(r.GetNonce())
	e := make(encoder, 0, n)
	e = append(e, checkinRequestContext...)
	e = e.str(r.GetUuid()).str(r.GetHostname()).str(r.GetAgentVersion()).str(r.GetOs()).str(r.GetArch())
	e = e.i64(r.GetTimestampUnixNano()).bytes(r.GetNonce())
	return e
}

// SigningBytes returns the canonical encoding of r that its Signature
// covers: the context string "vigo-checkin-response-v1\n", then uuid,
// request_nonce, server_time_unix_nano, next_checkin_millis, the number of
// actions, and each action's type, reason, version and sha256; then, only
// when an action allows a downgrade, "allow_downgrade\n" and one byte (1
// or 0) per action.
//
// The trailer is added only when needed so that every other response has
// the bytes it had before allow_downgrade existed, and agents built before
// keep verifying them. The encoding stays unambiguous: the fields before
// the trailer are length-prefixed or fixed-size, so where they end is
// known, and the trailer's length follows from the number of actions.
func (r *CheckinResponse) SigningBytes() []byte {
	e := make(encoder, 0, 128)
	e = append(e, checkinResponseContext...)
	e = e.str(r.GetUuid()).bytes(r.GetRequestNonce()).i64(r.GetServerTimeUnixNano()).i64(r.GetNextCheckinMillis())
	e = e.u32(uint32(len(r.GetActions())))
	downgrade := false
	for _, a := range r.GetActions() {
		e = e.u32(uint32(a.GetType())).str(a.GetReason()).str(a.GetVersion()).str(a.GetSha256())
		downgrade = downgrade || a.GetAllowDowngrade()
	}
	if downgrade {
		e = append(e, allowDowngradeTrailer...)
		for _, a := range r.GetActions() {
			if a.GetAllowDowngrade() {
				e = append(e, 1)
			} else {
				e = append(e, 0)
			}
		}
	}
	return e
}

// Sign sets r's nonce to fresh random bytes and its signature by key: a
// request exactly as an envoy sends it.
func (r *CheckinRequest) Sign(key ed25519.PrivateKey) {
	r.Nonce = make([]byte, NonceSize)
	_, _ = rand.Read(r.Nonce) // crypto/rand.Read never fails since Go 1.24
	r.Signature = ed25519.Sign(key, r.SigningBytes())
}

// VerifyResponse checks that resp is the answer to req signed by the
// pinned serverKey: the signature first, then that it names req's uuid
// and nonce (an answer replayed from another check-in is refused).
func VerifyResponse(serverKey ed25519.PublicKey, req *CheckinRequest, resp *CheckinResponse) error {
	if !ed25519.Verify(serverKey, resp.SigningBytes(), resp.GetSignature()) {
		return errors.New("check-in answer is not signed by the pinned server key")
	}
	if resp.GetUuid() != req.GetUuid() || !bytes.Equal(resp.GetRequestNonce(), req.GetNonce()) {
		return errors.New("check-in answer is for another request")
	}
	return nil
}
