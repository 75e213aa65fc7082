package console

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/server/store"
)

// auditTypes are the kinds of events the audit page filters by.
var auditTypes = []string{
	store.AuditRegistration, store.AuditEnvoyRevoked, store.AuditEnvoyRenewed, store.AuditEnvoyRebootstrap,
	store.AuditEnvoyUpdate, store.AuditTokenCreated, store.AuditTokenRevoked, store.AuditPolicyApplied,
	store.AuditPolicyRejected, store.AuditPolicyFetchFailed, store.AuditPolicyFetchRecovered, store.AuditPolicySuspended,
	store.AuditPolicyResumed, store.AuditPolicyPinned, store.AuditPolicyUnpinned, store.AuditConsoleSignIn,
	store.AuditConsoleSignOut,
}

// AuditPageSize is the number of events on a page.
const AuditPageSize = 100

type auditData struct {
	Query                        url.Values
	Types                        []string
	Type, Hostname, Since, Until string
	Events                       []store.AuditEvent
	// Older is the query of the next (older) page; Live is set on the
	// first page, which follows new events.
	Older string
	Live  bool
}

func (c *Console) handleAudit(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	now := c.cfg.Now()
	d := auditData{Query: q, Types: auditTypes, Type: q.Get("type"), Hostname: clip(strings.TrimSpace(q.Get("hostname")), 253),
		Since: clip(strings.TrimSpace(q.Get("since")), 64), Until: clip(strings.TrimSpace(q.Get("until")), 64)}
	aq := store.AuditQuery{Hostname: strings.ToLower(d.Hostname), Limit: AuditPageSize + 1}
	if d.Type != "" {
		if !slices.Contains(auditTypes, d.Type) {
			c.fail(w, r, s, http.StatusBadRequest, "type: not a kind of audit event")
			return
		}
		aq.Types = []string{d.Type}
	}
	var err error
	if aq.Since, err = parseTime("since", d.Since, now); err != nil {
		c.fail(w, r, s, http.StatusBadRequest, err.Error())
		return
	}
	if aq.Until, err = parseTime("until", d.Until, now); err != nil {
		c.fail(w, r, s, http.StatusBadRequest, err.Error())
		return
	}
	if b := q.Get("before"); b != "" {
		at, id, ok := strings.Cut(b, "-")
		ms, err1 := strconv.ParseInt(at, 10, 64)
		n, err2 := strconv.ParseInt(id, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			c.fail(w, r, s, http.StatusBadRequest, "before: not a position of this list (follow the page links)")
			return
		}
		aq.Before = &store.AuditCursor{At: time.UnixMilli(ms).UTC(), ID: n}
	}
	d.Live = aq.Before == nil && aq.Until.IsZero()
	evs, err := c.cfg.Store.QueryAudit(r.Context(), aq)
	if err != nil {
		c.internal(w, r, s, "query audit", err)
		return
	}
	if len(evs) > AuditPageSize {
		evs = evs[:AuditPageSize]
		last := evs[len(evs)-1]
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("before", strconv.FormatInt(last.At.UnixMilli(), 10)+"-"+strconv.FormatInt(last.ID, 10))
		d.Older = "?" + v.Encode()
	}
	d.Events = evs
	c.render(w, r, http.StatusOK, "audit", s, "Audit", d)
}

// parseTime reads a time filter: RFC 3339, a date, or a duration back
// from now ("24h").
func parseTime(field, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, badRequest(field + ": " + strconv.Quote(s) + " is neither a time (2026-05-01, 2026-05-01T12:00:00Z) nor a duration back from now (24h)")
}
