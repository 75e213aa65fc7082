package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxHostnameLen is the longest hostname accepted, without the trailing dot.
const maxHostnameLen = 253

// NormalizeHostname returns s lower-cased and without one trailing dot, after
// checking that it is a valid hostname: RFC 1123 labels of 1 to 63 letters,
// digits and hyphens that neither start nor end with a hyphen, separated by
// dots, at most 253 characters in all.
func NormalizeHostname(s string) (string, error) {
	h := strings.TrimSuffix(s, ".")
	if h == "" {
		return "", errors.New("hostname is empty")
	}
	if len(h) > maxHostnameLen {
		return "", fmt.Errorf("hostname is %d characters long, more than %d", len(h), maxHostnameLen)
	}
	h = strings.ToLower(h)
	for label := range strings.SplitSeq(h, ".") {
		if err := checkLabel(label); err != nil {
			return "", fmt.Errorf("hostname %q: %w", s, err)
		}
	}
	return h, nil
}

func checkLabel(label string) error {
	switch {
	case label == "":
		return errors.New("empty label")
	case len(label) > 63:
		return fmt.Errorf("label %q is longer than 63 characters", label)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}
	for i := 0; i < len(label); i++ {
		if !isHostByte(label[i]) {
			r, _ := utf8.DecodeRuneInString(label[i:])
			return fmt.Errorf("label %q has invalid character %q", label, r)
		}
	}
	return nil
}

// isHostByte reports whether c may appear in a normalised hostname label.
func isHostByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-'
}

// Glob is a compiled hostname pattern; see the package documentation for its
// syntax. The zero Glob matches nothing.
type Glob struct {
	pattern string // normalised: lower case, no trailing dot
	wild    bool   // contains '*' or '?'
}

// CompileGlob checks pattern and returns it compiled. The pattern is
// lower-cased and loses one trailing dot. Letters, digits, '-', '.', '*' and
// '?' are allowed; labels (the text between dots) may not be empty.
func CompileGlob(pattern string) (Glob, error) {
	p := strings.ToLower(strings.TrimSuffix(pattern, "."))
	if p == "" {
		return Glob{}, errors.New("pattern is empty")
	}
	if len(p) > maxHostnameLen {
		return Glob{}, fmt.Errorf("pattern is %d characters long, more than %d", len(p), maxHostnameLen)
	}
	if p[len(p)-1] == '.' {
		return Glob{}, fmt.Errorf("pattern %q has an empty label", pattern)
	}
	wild := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '*' || c == '?':
			wild = true
		case c == '.':
			if i == 0 || p[i-1] == '.' {
				return Glob{}, fmt.Errorf("pattern %q has an empty label", pattern)
			}
		case isHostByte(c):
		case c == '[' || c == ']' || c == '\\':
			return Glob{}, fmt.Errorf("pattern %q: %q is not supported: only '*' and '?' are special", pattern, c)
		default:
			r, _ := utf8.DecodeRuneInString(p[i:])
			return Glob{}, fmt.Errorf("pattern %q has invalid character %q", pattern, r)
		}
	}
	if !wild {
		// A pattern without wildcards is a hostname and must be a valid one.
		if _, err := NormalizeHostname(p); err != nil {
			return Glob{}, fmt.Errorf("pattern %q is not a valid hostname: %w", pattern, errors.Unwrap(err))
		}
	}
	return Glob{pattern: p, wild: wild}, nil
}

// ValidateGlob reports whether pattern is a valid glob, with the reason when
// it is not.
func ValidateGlob(pattern string) error {
	_, err := CompileGlob(pattern)
	return err
}

// String returns the normalised pattern.
func (g Glob) String() string { return g.pattern }

// Match reports whether the whole of hostname matches g. Letters are compared
// without regard to case and one trailing dot of hostname is ignored;
// hostname is not otherwise validated.
func (g Glob) Match(hostname string) bool {
	if g.pattern == "" {
		return false
	}
	return matchGlob(g.pattern, strings.TrimSuffix(hostname, "."))
}

// lower folds an ASCII upper-case letter to lower case.
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// matchGlob matches a lower-case pattern against s. It backtracks only to the
// most recent '*', which is enough because '*' matches any run, so it runs in
// O(len(p)*len(s)) time at worst and never recurses.
func matchGlob(p, s string) bool {
	pi, si := 0, 0
	star, next := -1, 0 // position after the last '*' in p, and where its run ends in s
	for si < len(s) {
		if pi < len(p) {
			switch c := p[pi]; c {
			case '*':
				star, next = pi+1, si
				pi++
				continue
			case '?':
				pi++
				si++
				continue
			default:
				if c == lower(s[si]) {
					pi++
					si++
					continue
				}
			}
		}
		if star < 0 {
			return false
		}
		next++
		pi, si = star, next
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
