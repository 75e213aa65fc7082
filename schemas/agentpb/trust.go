package agentpb

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
)

// trustBundleContext is the context string of a trust bundle's signature.
const trustBundleContext = "vigo-trust-bundle-v1\n"

// maxTrustBundle bounds the certificates of a trust bundle an agent
// accepts (a rotation has two CAs).
const maxTrustBundle = 8

// TrustBundleDigest returns the SHA-256 of a list of CA certificates
// (DER), each length-prefixed, in order: CheckinRequest.TrustBundleSha256.
func TrustBundleDigest(ders [][]byte) []byte {
	e := make(encoder, 0, 1024)
	e = e.u32(uint32(len(ders)))
	for _, d := range ders {
		e = e.bytes(d)
	}
	sum := sha256.Sum256(e)
	return sum[:]
}

// TrustBundleSigningBytes returns the bytes r.TrustBundleSignature
// covers: "vigo-trust-bundle-v1\n", uuid, request_nonce, the number of
// certificates and each certificate.
func (r *CheckinResponse) TrustBundleSigningBytes() []byte {
	e := make(encoder, 0, 1024)
	e = append(e, trustBundleContext...)
	e = e.str(r.GetUuid()).bytes(r.GetRequestNonce()).u32(uint32(len(r.GetTrustBundle())))
	for _, d := range r.GetTrustBundle() {
		e = e.bytes(d)
	}
	return e
}

// SignTrustBundle sets r's trust bundle to ders, signed by key. Call it
// after Uuid and RequestNonce are set.
func (r *CheckinResponse) SignTrustBundle(key ed25519.PrivateKey, ders [][]byte) {
	r.TrustBundle = ders
	r.TrustBundleSignature = ed25519.Sign(key, r.TrustBundleSigningBytes())
}

// VerifyTrustBundle returns the trust bundle of resp, the answer to req,
// after checking its signature by the pinned serverKey; nil when resp has
// none. Call it after VerifyResponse.
func VerifyTrustBundle(serverKey ed25519.PublicKey, resp *CheckinResponse) ([][]byte, error) {
	ders := resp.GetTrustBundle()
	if len(ders) == 0 && len(resp.GetTrustBundleSignature()) == 0 {
		return nil, nil
	}
	if len(ders) == 0 || len(ders) > maxTrustBundle {
		return nil, errors.New("check-in answer: trust bundle must hold 1 to 8 CA certificates")
	}
	if !ed25519.Verify(serverKey, resp.TrustBundleSigningBytes(), resp.GetTrustBundleSignature()) {
		return nil, errors.New("check-in answer: trust bundle is not signed by the pinned server key")
	}
	return ders, nil
}
