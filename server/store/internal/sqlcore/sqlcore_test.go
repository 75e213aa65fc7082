package sqlcore

import (
	"testing"
	"time"
)

func TestRebind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"none", `SELECT 1`, `SELECT 1`},
		{"already numbered", `SELECT a FROM t WHERE b = $1`, `SELECT a FROM t WHERE b = $1`},
		{"in order", `UPDATE t SET a = ?, b = ? WHERE c = ?`, `UPDATE t SET a = $1, b = $2 WHERE c = $3`},
		{"ten and more", `VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, `VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Rebind(tc.in); got != tc.want {
				t.Errorf("Rebind(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestTimeScanner(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 29, 16, 0, 0, 123_000_000, time.UTC)
	for _, tc := range []struct {
		name    string
		in      any
		want    time.Time
		wantErr bool
	}{
		{"NULL", nil, time.Time{}, false},
		{"unix milliseconds", at.UnixMilli(), at, false},
		{"timestamp in another zone", at.In(time.FixedZone("X", 3600)), at, false},
		{"text", "2026-11-29", time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := time.Unix(1, 0) // overwritten, even by NULL
			err := tm(&got).Scan(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Scan(%v) error = %v, want error: %v", tc.in, err, tc.wantErr)
			}
			if err == nil && (!got.Equal(tc.want) || got.Location() != time.UTC) {
				t.Errorf("Scan(%v) = %v, want %v in UTC", tc.in, got, tc.want)
			}
		})
	}
}
