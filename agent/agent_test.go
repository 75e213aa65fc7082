package agent

import (
	"testing"
	"time"
)

func TestServerURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"host", "vigo.example.com", "https://vigo.example.com:8443", true},
		{"host port", "vigo.example.com:9443", "https://vigo.example.com:9443", true},
		{"url", "https://vigo.example.com/some/path", "https://vigo.example.com:8443", true},
		{"ipv6", "[::1]", "https://[::1]:8443", true},
		{"ipv4 port", "127.0.0.1:1234", "https://127.0.0.1:1234", true},
		{"http refused", "http://vigo.example.com", "", false},
		{"empty", " ", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := serverURL(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("serverURL(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err == nil && u.String() != tt.want {
				t.Errorf("serverURL(%q) = %s, want %s", tt.in, u, tt.want)
			}
		})
	}
}

func TestParseFingerprint(t *testing.T) {
	t.Parallel()
	hex := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	colons := ""
	for i := 0; i < len(hex); i += 2 {
		if i > 0 {
			colons += ":"
		}
		colons += hex[i : i+2]
	}
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"plain", hex, true},
		{"upper with colons", "SHA256:" + colons, true},
		{"short", hex[:62], false},
		{"not hex", "zz" + hex[2:], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := parseFingerprint(tt.in)
			if (err == nil) != tt.ok || (err == nil && len(b) != 32) {
				t.Errorf("parseFingerprint(%q) = %x, %v", tt.in, b, err)
			}
		})
	}
}

func TestGRPCAddress(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", "vigo.example.com:1530"},
		{":1530", "vigo.example.com:1530"},
		{"0.0.0.0:1530", "vigo.example.com:1530"},
		{"grpc.example.com:443", "grpc.example.com:443"},
		{"[::1]:1530", "[::1]:1530"},
	}
	for _, tt := range tests {
		if got, err := GRPCAddress(tt.in, "vigo.example.com"); err != nil || got != tt.want {
			t.Errorf("GRPCAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := GRPCAddress("no-port", "h"); err == nil {
		t.Error("grpcAddress without a port: no error")
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	for range 1000 {
		if d := jitter(time.Minute); d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("jitter(1m) = %v, outside ±10%%", d)
		}
	}
	if d := jitter(0); d != 0 {
		t.Errorf("jitter(0) = %v", d)
	}
}
