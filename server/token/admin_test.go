package token

import "testing"

func TestAdminToken(t *testing.T) {
	t.Parallel()
	tok := Generate()
	s := AdminString(tok)
	got, ok := ParseAdmin(s)
	if !ok || got != tok {
		t.Fatalf("ParseAdmin(%q) = %+v, %v", s, got, ok)
	}
	h := AdminHash(tok)
	if !AdminCompare(h, tok) {
		t.Error("AdminCompare refused the right secret")
	}
	other := tok
	other.Secret = Generate().Secret
	if AdminCompare(h, other) {
		t.Error("AdminCompare accepted a wrong secret")
	}
	for _, bad := range []string{
		"va_" + "a" + "bcdefghij" + "x",                           // no dot
		"va_abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz", // the server's own token
		tok.String(),                       // an enrollment token
		"va_ABCDEFGHIJ." + tok.Secret,      // not base32 lower-case
		"va_abcdefghij." + tok.Secret[:31], // short
		"",
	} {
		if _, ok := ParseAdmin(bad); ok {
			t.Errorf("ParseAdmin(%q) accepted", bad)
		}
	}
}
