package console

import (
	"net/http"
	"sort"
	"time"

	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/store"
)

type overviewData struct {
	Active, Revoked, Stale int
	StaleAfter             time.Duration
	// Registrations in the last 24 h.
	Allowed      []methodCount
	AllowedTotal int
	Refused      int
	TopRefusals  []store.AuditCount
	Policy       *apiv1.PolicyStatus
}

type methodCount struct {
	Method string
	Count  int
}

// maxTopRefusals is how many refusal reasons the overview lists.
const maxTopRefusals = 5

func (c *Console) handleOverview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	now := c.cfg.Now()
	d := overviewData{StaleAfter: StaleIntervals * c.cfg.CheckinInterval}
	counts := []struct {
		n *int
		q store.EnvoyQuery
	}{
		{&d.Active, store.EnvoyQuery{Status: store.StatusActive}},
		{&d.Revoked, store.EnvoyQuery{Status: store.StatusRevoked}},
		{&d.Stale, store.EnvoyQuery{Status: store.StatusActive, SeenBefore: now.Add(-d.StaleAfter)}},
	}
	for _, x := range counts {
		n, err := c.cfg.Store.CountEnvoys(ctx, x.q)
		if err != nil {
			c.internal(w, r, s, "count envoys", err)
			return
		}
		*x.n = n
	}
	regs, err := c.cfg.Store.CountAudit(ctx, now.Add(-24*time.Hour), store.AuditRegistration)
	if err != nil {
		c.internal(w, r, s, "count registrations", err)
		return
	}
	byMethod := map[string]int{}
	for _, g := range regs {
		if g.Result == "allowed" {
			byMethod[g.Method] += g.Count
			d.AllowedTotal += g.Count
			continue
		}
		d.Refused += g.Count
		if len(d.TopRefusals) < maxTopRefusals {
			d.TopRefusals = append(d.TopRefusals, g) // largest first
		}
	}
	for m, n := range byMethod {
		d.Allowed = append(d.Allowed, methodCount{m, n})
	}
	sort.Slice(d.Allowed, func(i, j int) bool { return d.Allowed[i].Count > d.Allowed[j].Count })
	if c.cfg.PolicyCtl != nil {
		st := c.cfg.PolicyCtl.Status()
		d.Policy = &st
	}
	c.render(w, r, http.StatusOK, "overview", s, "Overview", d)
}
