package main

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEscapeControls(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		multiline bool
		want      string
	}{
		{name: "plain", in: "web1.example.com", want: "web1.example.com"},
		{name: "unicode letters stay", in: "ünïcødé ✓", want: "ünïcødé ✓"},
		{name: "ESC", in: "a\x1b[31mb", want: `a\u001b[31mb`},
		{name: "newline and tab in a cell", in: "a\nb\tc", want: `a\u000ab\u0009c`},
		{name: "newline and tab in text", in: "a\nb\tc", multiline: true, want: "a\nb\tc"},
		{name: "CR in text", in: "a\rb", multiline: true, want: `a\u000db`},
		{name: "NUL and DEL", in: "\x00\x7f", want: `\u0000\u007f`},
		{name: "C1", in: "\u009b\u0085", want: `\u009b\u0085`},
		{name: "bidi", in: "\u202e\u2066\u200f", want: `\u202e\u2066\u200f`},
		{name: "line separators", in: "\u2028\u2029", multiline: true, want: `\u2028\u2029`},
		{name: "invalid UTF-8", in: "a\x9bb\xff", want: "a\ufffdb\ufffd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, escapeControls(tt.in, tt.multiline)); diff != "" {
				t.Errorf("escapeControls(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// TestSafeWriterSplitRunes: a rune split across two writes is judged whole.
func TestSafeWriterSplitRunes(t *testing.T) {
	var buf bytes.Buffer
	w := &safeWriter{w: &buf}
	csi := []byte("\u009b") // C2 9B
	for _, p := range [][]byte{[]byte("a"), csi[:1], csi[1:], []byte("b\u00e9"[:2]), []byte("\u00e9"[1:]), []byte("\xc3")} {
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), `a\u009bbé`+"\ufffd"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestOneLineAll(t *testing.T) {
	type inner struct{ S string }
	type wire struct {
		A   string
		P   *inner
		L   []inner
		M   map[string]string
		N   int
		Nil *inner
	}
	in := wire{A: "a\nb", P: &inner{S: "\x1b"}, L: []inner{{S: "\t"}}, M: map[string]string{"k\n": "v\r"}, N: 7}
	got := oneLineAll(in)
	want := wire{A: `a\u000ab`, P: &inner{S: `\u001b`}, L: []inner{{S: `\u0009`}}, M: map[string]string{`k\u000a`: `v\u000d`}, N: 7}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("oneLineAll (-want +got):\n%s", diff)
	}
	if in.A != "a\nb" || in.P.S != "\x1b" || in.M["k\n"] != "v\r" {
		t.Errorf("the input was changed: %+v", in)
	}
}
