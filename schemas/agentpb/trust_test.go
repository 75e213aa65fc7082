package agentpb

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

func TestTrustBundleSignature(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	resp := &CheckinResponse{Uuid: "u", RequestNonce: []byte("0123456789abcdef")}
	before := resp.SigningBytes()
	resp.SignTrustBundle(priv, [][]byte{[]byte("ca1"), []byte("ca2")})
	if !bytes.Equal(before, resp.SigningBytes()) {
		t.Fatal("a trust bundle changed the bytes of the main signature (agents built before would refuse the answer)")
	}
	got, err := VerifyTrustBundle(pub, resp)
	if err != nil || len(got) != 2 {
		t.Fatalf("VerifyTrustBundle = %q, %v", got, err)
	}
	for name, tamper := range map[string]func(r *CheckinResponse){
		"certificate": func(r *CheckinResponse) { r.TrustBundle = [][]byte{[]byte("evil"), []byte("ca2")} },
		"dropped":     func(r *CheckinResponse) { r.TrustBundle = r.TrustBundle[:1] },
		"nonce":       func(r *CheckinResponse) { r.RequestNonce = []byte("fedcba9876543210") },
		"unsigned":    func(r *CheckinResponse) { r.TrustBundleSignature = nil },
	} {
		r := &CheckinResponse{Uuid: resp.Uuid, RequestNonce: resp.RequestNonce, TrustBundle: resp.TrustBundle, TrustBundleSignature: resp.TrustBundleSignature}
		tamper(r)
		if _, err := VerifyTrustBundle(pub, r); err == nil {
			t.Errorf("%s tampered: verified", name)
		}
	}
	if got, err := VerifyTrustBundle(pub, &CheckinResponse{}); got != nil || err != nil {
		t.Errorf("no bundle: %q, %v", got, err)
	}
	if bytes.Equal(TrustBundleDigest([][]byte{[]byte("ab"), []byte("c")}), TrustBundleDigest([][]byte{[]byte("a"), []byte("bc")})) {
		t.Error("digest is ambiguous")
	}
}
