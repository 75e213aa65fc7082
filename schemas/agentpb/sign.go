package agentpb

import (
	"encoding/binary"
)

// Context strings of the signed messages (see agent.proto).
const (
	checkinRequestContext  = "vigo-checkin-request-v1\n"
	checkinResponseContext = "vigo-checkin-response-v1\n"
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
// actions, and each action's type, reason, version and sha256.
func (r *CheckinResponse) SigningBytes() []byte {
	e := make(encoder, 0, 128)
	e = append(e, checkinResponseContext...)
	e = e.str(r.GetUuid()).bytes(r.GetRequestNonce()).i64(r.GetServerTimeUnixNano()).i64(r.GetNextCheckinMillis())
	e = e.u32(uint32(len(r.GetActions())))
	for _, a := range r.GetActions() {
		e = e.u32(uint32(a.GetType())).str(a.GetReason()).str(a.GetVersion()).str(a.GetSha256())
	}
	return e
}
