package httpapi

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")}
	trusted := func(a netip.Addr) bool {
		for _, p := range proxies {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	proxy := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		name string
		peer netip.Addr
		xff  []string
		want string // "" = no source address
	}{
		{"untrusted peer ignores the header", netip.MustParseAddr("192.0.2.1"), []string{"198.51.100.1"}, "192.0.2.1"},
		{"no header: the proxy itself", proxy, nil, "10.0.0.1"},
		{"bare address", proxy, []string{"192.0.2.7"}, "192.0.2.7"},
		{"ip:port", proxy, []string{"192.0.2.7:5555"}, "192.0.2.7"},
		{"[v6]:port", proxy, []string{"[2001:db8::9]:5555"}, "2001:db8::9"},
		{"[v6]", proxy, []string{"[2001:db8::9]"}, "2001:db8::9"},
		{"v4-mapped", proxy, []string{"::ffff:192.0.2.7"}, "192.0.2.7"},
		{"right-most untrusted hop wins", proxy, []string{"198.51.100.1, 192.0.2.7, 10.0.0.2"}, "192.0.2.7"},
		{"several headers", proxy, []string{"198.51.100.1", "192.0.2.7", "10.0.0.2:80"}, "192.0.2.7"},
		{"only trusted hops: the left-most", proxy, []string{"10.0.0.3, fd00::2"}, "10.0.0.3"},
		{"empty hops skipped", proxy, []string{" , 192.0.2.7 ,, "}, "192.0.2.7"},
		{"unknown", proxy, []string{"unknown"}, ""},
		{"obfuscated", proxy, []string{"_hidden"}, ""},
		{"zone", proxy, []string{"fe80::1%eth0"}, ""},
		{"[zone]:port", proxy, []string{"[fe80::1%eth0]:80"}, ""},
		{"[v4]", proxy, []string{"[192.0.2.7]"}, ""},
		{"port only", proxy, []string{":5555"}, ""},
		{"bad port", proxy, []string{"192.0.2.7:x"}, ""},
		{"garbage right of a good hop", proxy, []string{"192.0.2.7, nonsense"}, ""},
		{"garbage behind a trusted hop", proxy, []string{"nonsense, 10.0.0.2"}, ""},
		{"garbage left of the client is not read", proxy, []string{"nonsense, 192.0.2.7"}, "192.0.2.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := clientAddr(tt.peer, tt.xff, trusted)
			s := ""
			if got.IsValid() {
				s = got.String()
			}
			if s != tt.want {
				t.Errorf("clientAddr(%v, %q) = %q, want %q", tt.peer, tt.xff, s, tt.want)
			}
		})
	}
}

// FuzzForwardedFor checks the X-Forwarded-For reader against its contract
// for any header: the answer is no address, or an address (unmapped, no
// zone) that is not a trusted proxy unless every hop is one, and it is the
// proxy's own address only when the header names no other client.
func FuzzForwardedFor(f *testing.F) {
	for _, s := range []string{"", "192.0.2.7", "192.0.2.7:5555", "[2001:db8::9]:5555", "unknown", "10.0.0.2, 192.0.2.7",
		"192.0.2.7, 10.0.0.2", "fe80::1%eth0", "::ffff:10.0.0.1", " , ,", "[::ffff:192.0.2.1]:1"} {
		f.Add(s)
	}
	proxy := netip.MustParsePrefix("10.0.0.0/24")
	trusted := proxy.Contains
	peer := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, xff string) {
		got := clientAddr(peer, []string{xff}, trusted)
		if !got.IsValid() {
			return
		}
		if got.Zone() != "" || got.Is4In6() {
			t.Fatalf("clientAddr(%q) = %v: zoned or mapped", xff, got)
		}
		allTrusted := true
		for h := range strings.SplitSeq(xff, ",") {
			h = strings.TrimSpace(h)
			if h == "" {
				continue
			}
			a, ok := parseHop(h)
			if !ok {
				// A hop that does not parse, right of the client, would
				// have given no address; left of it, it is not read.
				allTrusted = false
				continue
			}
			if !trusted(a) {
				allTrusted = false
			}
		}
		if trusted(got) && !allTrusted {
			t.Fatalf("clientAddr(%q) = %v, a trusted proxy, though the header names another hop", xff, got)
		}
		if got != peer && !hopNames(xff, got) {
			t.Fatalf("clientAddr(%q) = %v, which no hop names", xff, got)
		}
	})
}

// hopNames reports whether some hop of xff parses to want.
func hopNames(xff string, want netip.Addr) bool {
	for h := range strings.SplitSeq(xff, ",") {
		if a, ok := parseHop(strings.TrimSpace(h)); ok && a == want {
			return true
		}
	}
	return false
}
