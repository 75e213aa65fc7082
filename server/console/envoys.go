package console

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/store"
)

// PageSize is the number of envoys on a page.
const PageSize = 50

// MaxCount is the most envoys the envoys page counts ("10000+ match").
const MaxCount = 10_000

type envoysData struct {
	Query url.Values
	// Filter values, as given.
	Search, Status, Method, Rule, Revision, Version string
	Stale                                           bool
	Sort                                            string
	Desc                                            bool
	Envoys                                          []envoyRow
	// Total is the number of envoys that match, MaxCount at most
	// (TotalCapped then).
	Total       int
	TotalCapped bool
	// Prev and Next are the queries of the neighbouring pages ("" when
	// there is none).
	Prev, Next string
	StaleAfter time.Duration
	// SortLinks are the column headers' links (by sort), SortMarks the
	// arrow of the current order.
	SortLinks, SortMarks map[string]string
}

type envoyRow struct {
	store.Envoy
	Stale bool
}

// badRequest is a problem with a page's query, shown with 400.
type badRequest string

func (b badRequest) Error() string { return string(b) }

// envoyQuery reads the envoys page's query: filters, order and cursor.
func (c *Console) envoyQuery(q url.Values, now time.Time) (store.EnvoyQuery, error) {
	var eq store.EnvoyQuery
	get := func(key string, max int) (string, error) {
		v := strings.TrimSpace(q.Get(key))
		if len(v) > max {
			return "", badRequest(key + ": at most " + strconv.Itoa(max) + " characters")
		}
		return v, nil
	}
	var err error
	fields := []struct {
		key string
		max int
		dst *string
	}{
		{"q", 253, &eq.Search}, {"status", 16, &eq.Status}, {"method", 64, &eq.Method},
		{"rule", 512, &eq.Rule}, {"revision", 256, &eq.PolicyRevision}, {"version", 64, &eq.AgentVersion},
	}
	for _, f := range fields {
		if *f.dst, err = get(f.key, f.max); err != nil {
			return eq, err
		}
	}
	eq.Search = strings.ToLower(eq.Search)
	if eq.Status != "" && eq.Status != store.StatusActive && eq.Status != store.StatusRevoked {
		return eq, badRequest("status: must be active or revoked")
	}
	switch q.Get("stale") {
	case "":
	case "1":
		eq.SeenBefore = now.Add(-StaleIntervals * c.cfg.CheckinInterval)
	default:
		return eq, badRequest("stale: must be 1 or absent")
	}
	switch s := store.EnvoySort(q.Get("sort")); s {
	case "", store.SortHostname, store.SortCreated, store.SortSeen:
		eq.Sort = s
	default:
		return eq, badRequest("sort: must be hostname, created or seen")
	}
	eq.Desc = q.Get("desc") == "1"
	if a := q.Get("after"); a != "" {
		if eq.After, err = parseCursor(a, eq.Sort); err != nil {
			return eq, err
		}
	}
	if b := q.Get("before"); b != "" {
		if eq.After != nil {
			return eq, badRequest("after and before: give one of them")
		}
		if eq.Before, err = parseCursor(b, eq.Sort); err != nil {
			return eq, err
		}
	}
	return eq, nil
}

// formatCursor encodes a position for a link: "h" and the hostname, or
// "t" and unix milliseconds, then the UUID.
func formatCursor(q store.EnvoyQuery, e store.Envoy) string {
	cur := q.Cursor(e)
	key := "h" + cur.Hostname
	if q.Sort == store.SortCreated || q.Sort == store.SortSeen {
		key = "t" + strconv.FormatInt(cur.Time.UnixMilli(), 10)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(key + "\n" + cur.UUID))
}

func parseCursor(s string, sort store.EnvoySort) (*store.EnvoyCursor, error) {
	bad := badRequest("after/before: not a position of this list (follow the page links)")
	if len(s) > 512 {
		return nil, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	key, uuid, ok := strings.Cut(string(b), "\n")
	if !ok || key == "" {
		return nil, bad
	}
	c := &store.EnvoyCursor{UUID: uuid}
	timed := sort == store.SortCreated || sort == store.SortSeen
	switch {
	case key[0] == 'h' && !timed:
		c.Hostname = key[1:]
	case key[0] == 't' && timed:
		ms, err := strconv.ParseInt(key[1:], 10, 64)
		if err != nil {
			return nil, bad
		}
		c.Time = time.UnixMilli(ms).UTC()
	default:
		return nil, bad
	}
	return c, nil
}

func (c *Console) handleEnvoys(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	now := c.cfg.Now()
	q := r.URL.Query()
	eq, err := c.envoyQuery(q, now)
	if err != nil {
		c.fail(w, r, s, http.StatusBadRequest, err.Error())
		return
	}
	d := envoysData{Query: q, Search: q.Get("q"), Status: eq.Status, Method: eq.Method, Rule: eq.Rule, Revision: eq.PolicyRevision,
		Version: eq.AgentVersion, Stale: !eq.SeenBefore.IsZero(), Sort: string(eq.Sort), Desc: eq.Desc,
		StaleAfter: StaleIntervals * c.cfg.CheckinInterval}
	d.SortLinks, d.SortMarks = sortLinks(q, eq)
	// One more than a page tells whether there is a page beyond.
	eq.Limit = PageSize + 1
	es, err := c.cfg.Store.QueryEnvoys(ctx, eq)
	if err != nil {
		c.internal(w, r, s, "query envoys", err)
		return
	}
	more := len(es) > PageSize
	if eq.After == nil && eq.Before == nil && !more {
		d.Total = len(es) // the whole list is on this page: no count needed
	} else {
		// Counted up to MaxCount: a filter that many envoys match costs
		// no more than a page.
		cq := eq
		cq.Limit = MaxCount + 1
		if d.Total, err = c.cfg.Store.CountEnvoys(ctx, cq); err != nil {
			c.internal(w, r, s, "count envoys", err)
			return
		}
		if d.Total > MaxCount {
			d.Total, d.TotalCapped = MaxCount, true
		}
	}
	if more {
		if eq.Before != nil {
			es = es[1:] // read backwards: the extra one is the first
		} else {
			es = es[:PageSize]
		}
	}
	staleBefore := now.Add(-d.StaleAfter)
	for _, e := range es {
		d.Envoys = append(d.Envoys, envoyRow{Envoy: e, Stale: e.Status == store.StatusActive && e.Seen().Before(staleBefore)})
	}
	page := func(key string, e store.Envoy) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Del("after")
		v.Del("before")
		v.Set(key, formatCursor(eq, e))
		return "?" + v.Encode()
	}
	if len(es) > 0 {
		// Backwards from a cursor, a page beyond means one before; a page
		// after a cursor (or the first) has one before when it started
		// from a cursor.
		if (eq.Before != nil && more) || eq.After != nil {
			d.Prev = page("before", es[0])
		}
		if (eq.Before == nil && more) || eq.Before != nil {
			d.Next = page("after", es[len(es)-1])
		}
	}
	c.render(w, r, http.StatusOK, "envoys", s, "Envoys", d)
}

type envoyData struct {
	Envoy       store.Envoy
	Stale       bool
	StaleAfter  time.Duration
	CertLeft    time.Duration
	Audit       []store.AuditEvent
	Error       string
	RevokeValue string
}

// envoyAuditLimit is how many audit events an envoy's page shows.
const envoyAuditLimit = 50

func (c *Console) handleEnvoy(w http.ResponseWriter, r *http.Request, s *session) {
	c.showEnvoy(w, r, s, http.StatusOK, r.PathValue("id"), "")
}

// showEnvoy renders an envoy's page, with an error of an action.
func (c *Console) showEnvoy(w http.ResponseWriter, r *http.Request, s *session, code int, id, msg string) {
	e, err := c.cfg.Ops.Envoy(r.Context(), id)
	if err != nil {
		c.opFailed(w, r, s, "look up envoy", err)
		return
	}
	now := c.cfg.Now()
	d := envoyData{Envoy: e, StaleAfter: StaleIntervals * c.cfg.CheckinInterval, CertLeft: e.CertNotAfter.Sub(now), Error: msg}
	d.Stale = e.Status == store.StatusActive && e.Seen().Before(now.Add(-d.StaleAfter))
	if d.Audit, err = c.cfg.Store.QueryAudit(r.Context(), store.AuditQuery{EnvoyUUID: e.UUID, Limit: envoyAuditLimit}); err != nil {
		c.internal(w, r, s, "query audit", err)
		return
	}
	if r.Method == http.MethodPost {
		d.RevokeValue = r.PostFormValue("reason")
	}
	c.render(w, r, code, "envoy", s, e.Hostname, d)
}

// opFailed shows a refused operation of admin.Ops with its status (its
// message is safe to show), or a 500 page.
func (c *Console) opFailed(w http.ResponseWriter, r *http.Request, s *session, op string, err error) {
	if code, ok := opStatus(err); ok {
		c.fail(w, r, s, code, err.Error())
		return
	}
	c.internal(w, r, s, op, err)
}

func opStatus(err error) (int, bool) {
	switch {
	case errors.Is(err, admin.ErrInvalid):
		return http.StatusBadRequest, true
	case errors.Is(err, admin.ErrNotFound):
		return http.StatusNotFound, true
	case errors.Is(err, admin.ErrConflict):
		return http.StatusConflict, true
	}
	return 0, false
}

// envoyAction runs an action on an envoy and goes back to its page, with
// the outcome.
func (c *Console) envoyAction(w http.ResponseWriter, r *http.Request, s *session, done string, act func() (store.Envoy, error)) {
	e, err := act()
	if err != nil {
		if code, ok := opStatus(err); ok && !errors.Is(err, admin.ErrNotFound) {
			c.showEnvoy(w, r, s, code, r.PathValue("id"), err.Error())
			return
		}
		c.opFailed(w, r, s, "envoy action", err)
		return
	}
	http.Redirect(w, r, "/ui/envoys/"+url.PathEscape(e.UUID)+"?done="+done, http.StatusSeeOther)
}

func (c *Console) handleEnvoyRevoke(w http.ResponseWriter, r *http.Request, s *session) {
	c.envoyAction(w, r, s, "revoked", func() (store.Envoy, error) {
		return c.cfg.Ops.RevokeEnvoy(r.Context(), s.caller, r.PathValue("id"), r.PostFormValue("reason"))
	})
}

func (c *Console) handleEnvoyRebootstrap(w http.ResponseWriter, r *http.Request, s *session) {
	c.envoyAction(w, r, s, "rebootstrap", func() (store.Envoy, error) {
		return c.cfg.Ops.RequestRebootstrap(r.Context(), s.caller, r.PathValue("id"))
	})
}

func (c *Console) handleEnvoyUpdate(w http.ResponseWriter, r *http.Request, s *session) {
	c.envoyAction(w, r, s, "update", func() (store.Envoy, error) {
		return c.cfg.Ops.RequestUpdate(r.Context(), s.caller, r.PathValue("id"), r.PostFormValue("version"), r.PostFormValue("allow_downgrade") == "on")
	})
}

// sortLinks are the links of the sortable columns: a click orders by the
// column, a second one reverses the order. Paging starts again.
func sortLinks(q url.Values, eq store.EnvoyQuery) (links, marks map[string]string) {
	links, marks = map[string]string{}, map[string]string{}
	current := eq.Sort
	if current == "" {
		current = store.SortHostname
	}
	for _, col := range []store.EnvoySort{store.SortHostname, store.SortSeen, store.SortCreated} {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Del("after")
		v.Del("before")
		v.Del("desc")
		v.Set("sort", string(col))
		if col == current {
			marks[string(col)] = " ▲"
			if eq.Desc {
				marks[string(col)] = " ▼"
			} else {
				v.Set("desc", "1")
			}
		}
		links[string(col)] = "?" + v.Encode()
	}
	return links, marks
}
