package policy

import (
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"web1.example.com", "web1.example.com", true},
		{"web1.example.com", "WEB1.Example.com.", true},
		{"web1.example.com", "web10.example.com", false},
		{"Web1.Example.com.", "web1.example.com", true},
		{"*.web.example.com", "a.web.example.com", true},
		{"*.web.example.com", "a.b.web.example.com", true},
		{"*.web.example.com", "web.example.com", false},
		{"*.dev.*", "x.dev.example.com", true},
		{"*.dev.*", "dev.example.com", false},
		{"web*", "web", true},
		{"web*", "web1.example.com", true},
		{"web*", "aweb1", false},
		{"web-*.dc1.example.com", "web-7.dc1.example.com", true},
		{"web-*.dc1.example.com", "web.dc1.example.com", false},
		{"db?.example.com", "db1.example.com", true},
		{"db?.example.com", "db.example.com", false},
		{"db?.example.com", "db10.example.com", false},
		{"*", "anything.at.all", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyyca", false},
		{"*a*a*a*a*a*b", strings.Repeat("a", 200), false},
		{"?", "", false},
		{"?", "ab", false},
	}
	for _, tt := range tests {
		g, err := CompileGlob(tt.pattern)
		if err != nil {
			t.Fatalf("CompileGlob(%q): %v", tt.pattern, err)
		}
		if got := g.Match(tt.host); got != tt.want {
			t.Errorf("CompileGlob(%q).Match(%q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
	if (Glob{}).Match("") || (Glob{}).Match("a") {
		t.Errorf("zero Glob matches")
	}
}

func TestCompileGlobErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ pattern, want string }{
		{"", "pattern is empty"},
		{".", "pattern is empty"},
		{"web[1-3].example.com", `pattern "web[1-3].example.com": '[' is not supported: only '*' and '?' are special`},
		{`web\*`, `pattern "web\\*": '\\' is not supported: only '*' and '?' are special`},
		{"a..b", `pattern "a..b" has an empty label`},
		{".a", `pattern ".a" has an empty label`},
		{"a..", `pattern "a.." has an empty label`},
		{"a b", `pattern "a b" has invalid character ' '`},
		{"-a.example.com", `pattern "-a.example.com" is not a valid hostname: label "-a" starts or ends with a hyphen`},
		{strings.Repeat("a", 254), "pattern is 254 characters long, more than 253"},
	}
	for _, tt := range tests {
		err := ValidateGlob(tt.pattern)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ValidateGlob(%q) = %v, want %q", tt.pattern, err, tt.want)
		}
	}
}

func TestNormalizeHostname(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want, err string }{
		{in: "Web1.Example.COM.", want: "web1.example.com"},
		{in: "localhost", want: "localhost"},
		{in: "a-b.c", want: "a-b.c"},
		{in: "1.2.3.4", want: "1.2.3.4"},
		{in: "", err: "hostname is empty"},
		{in: ".", err: "hostname is empty"},
		{in: "a..b", err: `hostname "a..b": empty label`},
		{in: "a.b..", err: `hostname "a.b..": empty label`},
		{in: "-a", err: `hostname "-a": label "-a" starts or ends with a hyphen`},
		{in: "a_b", err: `hostname "a_b": label "a_b" has invalid character '_'`},
		{in: "é.com", err: `hostname "é.com": label "é" has invalid character 'é'`},
		{in: strings.Repeat("a", 64), err: `hostname "` + strings.Repeat("a", 64) + `": label "` + strings.Repeat("a", 64) + `" is longer than 63 characters`},
	}
	for _, tt := range tests {
		got, err := NormalizeHostname(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("NormalizeHostname(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("NormalizeHostname(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	long := strings.Repeat("a.", 126) + "ab" // 254 characters
	if _, err := NormalizeHostname(long); err == nil {
		t.Errorf("NormalizeHostname(254 characters) succeeded")
	}
	if _, err := NormalizeHostname(long[2:] + "."); err != nil {
		t.Errorf("NormalizeHostname(252 characters and a dot): %v", err)
	}
}

// refMatch is a reference glob matcher: a dynamic programme over bytes,
// slow but obviously right. p is lower case; s is folded here.
func refMatch(p, s string) bool {
	s = strings.TrimSuffix(s, ".")
	// m[j] reports whether p[:i] matches s[:j].
	m := make([]bool, len(s)+1)
	m[0] = true
	for i := 0; i < len(p); i++ {
		next := make([]bool, len(s)+1)
		for j := 0; j <= len(s); j++ {
			switch p[i] {
			case '*':
				next[j] = m[j] || (j > 0 && next[j-1])
			case '?':
				next[j] = j > 0 && m[j-1]
			default:
				next[j] = j > 0 && m[j-1] && p[i] == lower(s[j-1])
			}
		}
		m = next
	}
	return m[len(s)]
}

func FuzzGlobMatch(f *testing.F) {
	f.Add("*.web.example.com", "a.b.web.example.com")
	f.Add("*.dev.*", "x.dev.y")
	f.Add("db?.example.com", "DB1.example.com.")
	f.Add("a*b*c", "axxbyyca")
	f.Add("*a*a*b", "aaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, pattern, host string) {
		g, err := CompileGlob(pattern)
		if err != nil {
			return
		}
		if got, want := g.Match(host), refMatch(g.String(), host); got != want {
			t.Fatalf("CompileGlob(%q).Match(%q) = %v, reference says %v", pattern, host, got, want)
		}
		// A valid hostname always matches itself as a pattern.
		if h, err := NormalizeHostname(host); err == nil {
			if hg, err := CompileGlob(h); err != nil || !hg.Match(host) {
				t.Fatalf("hostname %q does not match itself: %v", host, err)
			}
		}
	})
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(decidePolicy))
	f.Add([]byte("package policy\napproved: [\"a\"]\ntests: [{hostname: \"a\", ip: \"1.2.3.4\", expect: \"approved\"}]\n"))
	f.Add([]byte("package policy\ntrusted_enrollment: [{pattern: \"*\", cidrs: [\"::/0\"]}]\n"))
	f.Add([]byte("package policy\nimport \"list\"\napproved: list.Concat([[\"a\"], [\"b\"]])\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Load([]File{{Name: "p.cue", Data: src}}, "fuzz")
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		p.RunTests()
		p.Decide(Request{Hostname: "a.example.com"})
	})
}
