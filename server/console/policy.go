package console

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/store"
)

type policyData struct {
	Status  *apiv1.PolicyStatus
	History []verdict
	// Rules are the active policy's (nil when none is active).
	Rules *rules
	// Explain is the explain form and its answer.
	Explain explain
}

// verdict is a revision the server judged: applied or refused.
type verdict struct {
	store.AuditEvent
	Subject, Author string
}

// rules is the active policy as written, each entry with its position.
type rules struct {
	Revision     string
	CertValidity policy.Str
	TokenMaxTTL  *policy.Str
	Tests        int
	Trusted      []policy.TrustedSpec
	Approved     []policy.ApprovedSpec
	Revocations  []policy.RevocationSpec
	// Hidden counts what is not shown of each list (MaxRules).
	HiddenTrusted, HiddenApproved, HiddenRevocations int
}

type explain struct {
	Hostname, IP string
	Asked        bool
	Error        string
	Decision     policy.Decision
}

// MaxRules is how many entries of each list of a policy the page shows.
const MaxRules = 500

// historyLimit is how many verdicts the policy page shows.
const historyLimit = 30

func (c *Console) handlePolicy(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	var d policyData
	code := http.StatusOK
	if c.cfg.PolicyCtl != nil {
		st := c.cfg.PolicyCtl.Status()
		d.Status = &st
		applied, err := c.cfg.PolicyCtl.History(ctx, store.MaxPolicyHistory)
		if err != nil {
			c.internal(w, r, s, "policy history", err)
			return
		}
		byRev := map[string]apiv1.PolicyHistoryEntry{}
		for _, h := range applied {
			byRev[h.Revision] = h
		}
		evs, err := c.cfg.Store.QueryAudit(ctx, store.AuditQuery{Types: []string{store.AuditPolicyApplied, store.AuditPolicyRejected}, Limit: historyLimit})
		if err != nil {
			c.internal(w, r, s, "policy verdicts", err)
			return
		}
		for _, ev := range evs {
			v := verdict{AuditEvent: ev, Author: ev.Details["author"]}
			if h, ok := byRev[ev.Revision]; ok {
				v.Subject = h.Subject
				if v.Author == "" {
					v.Author = h.Author
				}
			}
			d.History = append(d.History, v)
		}
	}
	p := c.cfg.Policy()
	if sp := p.Spec(); sp != nil {
		d.Rules = &rules{Revision: p.Revision(), CertValidity: sp.CertValidity, TokenMaxTTL: sp.TokenMaxTTL, Tests: len(sp.Tests)}
		d.Rules.Trusted, d.Rules.HiddenTrusted = firstN(sp.Trusted, MaxRules)
		d.Rules.Approved, d.Rules.HiddenApproved = firstN(sp.Approved, MaxRules)
		d.Rules.Revocations, d.Rules.HiddenRevocations = firstN(sp.Revocations, MaxRules)
	}
	q := r.URL.Query()
	if q.Has("hostname") || q.Has("ip") {
		d.Explain = c.explain(p, q.Get("hostname"), q.Get("ip"))
		if d.Explain.Error != "" {
			code = http.StatusBadRequest
		}
	}
	c.render(w, r, code, "policy", s, "Policy", d)
}

// explain decides a registration with the active policy, as enrollment
// would without a token, and enrolls nothing.
func (c *Console) explain(p *policy.Policy, hostname, ip string) explain {
	x := explain{Hostname: clip(strings.TrimSpace(hostname), 253), IP: clip(strings.TrimSpace(ip), 64), Asked: true}
	if x.Hostname == "" {
		x.Error = "hostname: required"
		return x
	}
	var addr netip.Addr
	if x.IP != "" {
		a, err := netip.ParseAddr(x.IP)
		if err != nil {
			x.Error = "ip: not an IPv4 or IPv6 address"
			return x
		}
		addr = a
	}
	x.Decision = p.Decide(policy.Request{Hostname: x.Hostname, SourceIP: addr})
	return x
}

func firstN[T any](s []T, n int) ([]T, int) {
	if len(s) > n {
		return s[:n], len(s) - n
	}
	return s, 0
}
