package token

import (
	"errors"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestRoundTrip(t *testing.T) {
	tok := Generate()
	got, err := Parse(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	if got != tok {
		t.Fatalf("Parse(Generate()) = %+v, want %+v", got, tok)
	}
	h, err := Hash(tok)
	if err != nil {
		t.Fatal(err)
	}
	if !Compare(h, tok) {
		t.Fatal("Compare: the right secret was refused")
	}
	other := tok
	other.Secret = Generate().Secret
	if Compare(h, other) {
		t.Fatal("Compare: a wrong secret was accepted")
	}
	if Generate() == tok {
		t.Fatal("two tokens are equal")
	}
}

func TestParseRejects(t *testing.T) {
	good := Generate().String()
	for _, s := range []string{"", "vt_", "vt_abc.def", good[3:], "xx" + good[2:], good + "a", good[:len(good)-1],
		"vt_ABCDEFGHIJ." + good[14:], "vt_abcdefghij" + good[13:14] + "0" + good[15:]} {
		if _, err := Parse(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) err = %v, want ErrMalformed", s, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Generate().String())
	f.Add("vt_.")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil || again != tok {
			t.Fatalf("Parse(%q) not stable: %+v, %v", s, again, err)
		}
	})
}

func TestCompareUnknown(t *testing.T) {
	tok := Generate()
	if CompareUnknown(tok) {
		t.Fatal("CompareUnknown accepted a token")
	}
	// The comparison costs what a real one costs: same bcrypt cost.
	if c, err := bcrypt.Cost(dummyHash()); err != nil || c != Cost {
		t.Fatalf("dummy hash cost %d (%v), want %d", c, err, Cost)
	}
}
