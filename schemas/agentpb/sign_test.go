package agentpb

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSigningBytes(t *testing.T) {
	t.Parallel()
	req := &CheckinRequest{
		Uuid: "u", Hostname: "h", AgentVersion: "v", Os: "o", Arch: "a",
		TimestampUnixNano: 0x0102030405060708, Nonce: []byte{0xaa, 0xbb}, Signature: []byte("ignored"),
	}
	resp := &CheckinResponse{
		Uuid: "u", RequestNonce: []byte{0xcc}, ServerTimeUnixNano: 1, NextCheckinMillis: 2,
		Actions:   []*Action{{Type: ActionType_ACTION_TYPE_UPDATE, Version: "1.2", Sha256: "ff"}},
		Signature: []byte("ignored"),
	}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"request", req.SigningBytes(), hex.EncodeToString([]byte("vigo-checkin-request-v1\n")) +
			"0000000175" + "0000000168" + "0000000176" + "000000016f" + "0000000161" +
			"0102030405060708" + "00000002aabb"},
		{"response", resp.SigningBytes(), hex.EncodeToString([]byte("vigo-checkin-response-v1\n")) +
			"0000000175" + "00000001cc" + "0000000000000001" + "0000000000000002" + "00000001" +
			"00000003" + "00000000" + "00000003312e32" + "000000026666"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, hex.EncodeToString(tt.got)); diff != "" {
				t.Errorf("signing bytes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSigningBytesInjective checks that moving bytes between adjacent
// fields changes the encoding (the length prefixes prevent ambiguity).
func TestSigningBytesInjective(t *testing.T) {
	t.Parallel()
	a := (&CheckinRequest{Uuid: "ab", Hostname: "c"}).SigningBytes()
	b := (&CheckinRequest{Uuid: "a", Hostname: "bc"}).SigningBytes()
	if string(a) == string(b) {
		t.Error("different field splits encode the same")
	}
}

// TestSigningBytesAllowDowngrade: a response whose actions allow no
// downgrade has the bytes it had before the field existed (older agents
// verify it); one that allows a downgrade has the trailer, so the flag is
// signed and cannot be added or moved to another action in transit.
func TestSigningBytesAllowDowngrade(t *testing.T) {
	t.Parallel()
	update := func(allow bool) *Action {
		return &Action{Type: ActionType_ACTION_TYPE_UPDATE, Version: "v1.0.0", Sha256: "ff", AllowDowngrade: allow}
	}
	renew := &Action{Type: ActionType_ACTION_TYPE_RENEW}
	resp := func(as ...*Action) *CheckinResponse {
		return &CheckinResponse{Uuid: "u", RequestNonce: []byte{1}, Actions: as}
	}
	plain := resp(update(false)).SigningBytes()
	allowed := resp(update(true)).SigningBytes()
	if want := string(plain) + "allow_downgrade\n\x01"; string(allowed) != want {
		t.Errorf("with allow_downgrade: %q, want %q", allowed, want)
	}
	if a, b := resp(renew, update(true)).SigningBytes(), resp(update(true), renew).SigningBytes(); string(a) == string(b) {
		t.Error("the flag's action is not bound")
	}
	if a, b := resp(renew, update(true)).SigningBytes(), resp(renew, update(false)).SigningBytes(); string(a) == string(b) {
		t.Error("the flag is not signed")
	}
}

func TestSignAndVerifyResponse(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	srvPub, srvKey, _ := ed25519.GenerateKey(rand.Reader)
	a, b := &CheckinRequest{Uuid: "u1", Hostname: "h"}, &CheckinRequest{Uuid: "u1", Hostname: "h"}
	a.Sign(key)
	b.Sign(key)
	if !ed25519.Verify(pub, a.SigningBytes(), a.GetSignature()) {
		t.Fatal("request signature does not verify")
	}
	if len(a.GetNonce()) != NonceSize || bytes.Equal(a.GetNonce(), b.GetNonce()) {
		t.Fatal("nonces are not fresh NonceSize-byte values")
	}
	answer := func(req *CheckinRequest, key ed25519.PrivateKey) *CheckinResponse {
		r := &CheckinResponse{Uuid: req.GetUuid(), RequestNonce: req.GetNonce(), ServerTimeUnixNano: 1}
		r.Signature = ed25519.Sign(key, r.SigningBytes())
		return r
	}
	tampered := answer(a, srvKey)
	tampered.NextCheckinMillis = 5
	tests := []struct {
		name    string
		req     *CheckinRequest
		resp    *CheckinResponse
		wantErr string
	}{
		{"genuine", a, answer(a, srvKey), ""},
		{"the answer to another request", b, answer(a, srvKey), "for another request"},
		{"signed by another key", a, answer(a, key), "not signed by the pinned server key"},
		{"tampered after signing", a, tampered, "not signed by the pinned server key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyResponse(srvPub, tt.req, tt.resp)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("VerifyResponse = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
