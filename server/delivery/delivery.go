// Package delivery is the retry rule of the server's outgoing HTTP calls
// (commit statuses to the forge, notifications to webhooks and Slack):
// which answers are worth another attempt, and how long to wait between
// attempts. Both senders use it, so that they behave alike.
package delivery

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// MaxBackoff bounds the wait between two attempts.
const MaxBackoff = 5 * time.Minute

// Limits bound a sender's queue and retries. Zero fields take the
// defaults (WithDefaults).
type Limits struct {
	// QueueSize bounds what waits to be sent (default 256); more is
	// dropped, never waited for.
	QueueSize int
	// MaxAttempts bounds the attempts of one message (default 6).
	MaxAttempts int
	// Backoff is the wait before the first retry, doubled at each
	// (default 1s, at most MaxBackoff).
	Backoff time.Duration
}

// WithDefaults returns l with the defaults in its zero fields.
func (l Limits) WithDefaults() Limits {
	if l.QueueSize <= 0 {
		l.QueueSize = 256
	}
	if l.MaxAttempts <= 0 {
		l.MaxAttempts = 6
	}
	if l.Backoff <= 0 {
		l.Backoff = time.Second
	}
	return l
}

// Retry calls send until it succeeds, says not to retry, or attempts calls
// were made, waiting backoff after the first failure and twice as long after
// each next one (at most MaxBackoff). onRetry, when set, is told of each
// failure that is retried. It returns the last error, or ctx's error when
// ctx ends during a wait.
func Retry(ctx context.Context, attempts int, backoff time.Duration, send func(context.Context) (retry bool, err error), onRetry func(attempt int, err error)) error {
	var last error
	for attempt := 1; attempt <= attempts; attempt++ {
		retry, err := send(ctx)
		if err == nil {
			return nil
		}
		last = err
		if !retry || attempt == attempts {
			break
		}
		if onRetry != nil {
			onRetry(attempt, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, MaxBackoff)
	}
	return last
}

// Result classifies an HTTP answer: success below 300; a 429 or 5xx is
// worth another attempt; any other status is final. detail, when not
// empty, is added to the error of a final status (what to check).
func Result(status int, detail string) (retry bool, err error) {
	switch {
	case status < 300:
		return false, nil
	case status == http.StatusTooManyRequests || status >= 500:
		return true, fmt.Errorf("HTTP %d", status)
	case detail != "":
		return false, fmt.Errorf("HTTP %d: %s", status, detail)
	}
	return false, fmt.Errorf("HTTP %d (not retried)", status)
}
