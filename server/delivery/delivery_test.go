package delivery

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRetry(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		results   []bool // retry answers of the failing calls; success after them
		attempts  int
		wantCalls int
		wantErr   error
	}{
		{"first call succeeds", nil, 3, 1, nil},
		{"succeeds on the third", []bool{true, true}, 3, 3, nil},
		{"gives up after attempts", []bool{true, true, true, true}, 3, 3, boom},
		{"final error is not retried", []bool{false}, 3, 1, boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, retried := 0, 0
			err := Retry(context.Background(), tt.attempts, time.Nanosecond, func(context.Context) (bool, error) {
				calls++
				if calls <= len(tt.results) {
					return tt.results[calls-1], boom
				}
				return false, nil
			}, func(int, error) { retried++ })
			if calls != tt.wantCalls || !errors.Is(err, tt.wantErr) && (err != nil || tt.wantErr != nil) {
				t.Fatalf("calls %d, err %v; want %d, %v", calls, err, tt.wantCalls, tt.wantErr)
			}
			if retried != max(calls-1, 0) && err == nil || err != nil && retried != calls-1 {
				t.Errorf("onRetry told %d times for %d calls", retried, calls)
			}
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Retry(ctx, 10, time.Hour, func(context.Context) (bool, error) {
		calls++
		cancel()
		return true, errors.New("unavailable")
	}, nil)
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("err %v after %d calls, want context.Canceled after 1", err, calls)
	}
}

func TestResult(t *testing.T) {
	tests := []struct {
		status  int
		detail  string
		retry   bool
		wantErr string
	}{
		{200, "", false, ""},
		{204, "", false, ""},
		{429, "", true, "HTTP 429"},
		{503, "x", true, "HTTP 503"},
		{404, "", false, "HTTP 404 (not retried)"},
		{403, "check the token", false, "HTTP 403: check the token"},
	}
	for _, tt := range tests {
		retry, err := Result(tt.status, tt.detail)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if retry != tt.retry || got != tt.wantErr {
			t.Errorf("Result(%d) = %v, %q; want %v, %q", tt.status, retry, got, tt.retry, tt.wantErr)
		}
	}
}
