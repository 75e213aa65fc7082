package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/server/enroll"
)

// FuzzDecodeRegister feeds arbitrary bodies to the register decoder and
// validator: they must answer with an error or a valid request, never panic.
func FuzzDecodeRegister(f *testing.F) {
	f.Add(`{"hostname":"a.example.com","os":"linux","arch":"amd64","public_key":"x","csr":"y"}`)
	f.Add(`{"hostname":"A.","force":true,"token":"vt_aaaaaaaaaa.bbbb"}`)
	f.Add(`{`)
	f.Add(`{"public_key":"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"}`)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/api/v1/bootstrap/register", strings.NewReader(body))
		w := httptest.NewRecorder()
		req, err := decodeRegister(w, r)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		host, pub, err := enroll.Validate(&req)
		if err == nil && (host == "" || len(pub) != 32) {
			t.Fatalf("valid request without hostname or key: %q", body)
		}
	})
}
