package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// Much of what vigocli prints comes from the server, and some of that from
// unauthenticated callers (a registration's hostname or previous_uuid in
// the audit trail) or from a policy pull request (revocation reasons). A
// terminal obeys control characters in that text: ESC sequences recolour,
// move the cursor, rewrite the window title or, on some terminals, answer
// back into the shell; CR and newline overwrite or forge lines. So every
// byte vigocli prints goes through escapeControls: run() wraps stdout and
// stderr in a safeWriter (the net under every printing path), and table
// cells and one-line values are escaped with multiline=false, so that a
// newline or tab in a field cannot forge a row or a column.
//
// Escaped characters are shown, not dropped, as \uXXXX: the operator sees
// that something odd was sent, and the same text is a valid escape inside
// a JSON string, so -o json keeps every value exactly (encoding/json
// already escapes C0 controls; the writer adds DEL, C1 and the rest).

// escapeControls returns s with every character that drives a terminal
// replaced by a visible \uXXXX escape: C0 controls (except \n and \t when
// multiline), DEL, C1 controls, the bidirectional overrides, embeddings,
// isolates and marks that reorder what is shown, and the Unicode line and
// paragraph separators. Invalid UTF-8 becomes U+FFFD.
func escapeControls(s string, multiline bool) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if needsEscape(r, size, multiline) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s // the usual case: nothing to do
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for _, r := range s[i:] { // invalid bytes come as utf8.RuneError
		if r != utf8.RuneError && needsEscape(r, utf8.RuneLen(r), multiline) {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func needsEscape(r rune, size int, multiline bool) bool {
	switch {
	case r == utf8.RuneError && size <= 1:
		return true // invalid UTF-8: written as U+FFFD
	case r == '\n' || r == '\t':
		return !multiline
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true // bidirectional marks, embeddings, overrides and isolates
	case r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// oneLine escapes a value shown inside a line of vigocli's own layout.
func oneLine(s string) string { return escapeControls(s, false) }

// oneLineAll returns a copy of v, a wire type as the server sends it
// (JSON in, JSON out), with every string in it, map keys included,
// escaped with oneLine: for printing paths that lay out many fields of
// one answer.
func oneLineAll[T any](v T) T {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var c T
	if err := json.Unmarshal(b, &c); err != nil {
		return v
	}
	escapeStrings(reflect.ValueOf(&c).Elem())
	return c
}

func escapeStrings(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if v.CanSet() {
			v.SetString(oneLine(v.String()))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			escapeStrings(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				escapeStrings(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			escapeStrings(v.Index(i))
		}
	case reflect.Map:
		if v.IsNil() || !v.CanSet() {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			k := reflect.New(v.Type().Key()).Elem()
			k.Set(it.Key())
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(it.Value())
			escapeStrings(k)
			escapeStrings(e)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	}
}

// safeWriter escapes everything written through it with
// escapeControls(…, true). A UTF-8 sequence split across two writes is
// held back until it is complete, so that a C1 control cannot slip
// through in halves; Flush writes what is left.
type safeWriter struct {
	w       io.Writer
	partial []byte
}

func (s *safeWriter) Write(p []byte) (int, error) {
	data := p
	if len(s.partial) > 0 {
		data = append(s.partial, p...)
		s.partial = nil
	}
	cut := len(data) - incompleteSuffix(data)
	if cut < len(data) {
		s.partial = append([]byte(nil), data[cut:]...)
	}
	if _, err := io.WriteString(s.w, escapeControls(string(data[:cut]), true)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a held-back incomplete sequence (as U+FFFD).
func (s *safeWriter) Flush() error {
	if len(s.partial) == 0 {
		return nil
	}
	rest := s.partial
	s.partial = nil
	_, err := io.WriteString(s.w, escapeControls(string(rest), true))
	return err
}

// incompleteSuffix returns the length of an incomplete UTF-8 sequence at
// the end of b (0 when b ends with a whole rune or an invalid byte).
func incompleteSuffix(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return len(b) - i
			}
			return 0
		}
	}
	return 0
}

// table prints aligned columns; every cell is escaped with oneLine, so a
// tab or newline in a value cannot add a column or a row.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(t.tw, "\t")
		}
		io.WriteString(t.tw, oneLine(c))
	}
	io.WriteString(t.tw, "\n")
}

func (t *table) flush() error { return t.tw.Flush() }
