package policy

import (
	"net/netip"
	"time"
)

// Attempt is a past registration attempt, as the server's audit log
// recorded it, to be decided again by [Replay].
type Attempt struct {
	// ID is the audit event's id.
	ID int64 `json:"id"`
	// At is when it happened.
	At time.Time `json:"at"`
	// Hostname and SourceIP are what the host registered with and from.
	Hostname string     `json:"hostname"`
	SourceIP netip.Addr `json:"source_ip"`
	// Admitted reports that the policy admitted it (the registration may
	// still have failed later, for instance because the hostname was
	// taken); false means the policy refused it.
	Admitted bool `json:"admitted"`
	// Token reports that it was admitted by a token.
	Token bool `json:"token,omitempty"`
	// Rule is the rule that decided, as recorded.
	Rule string `json:"rule,omitempty"`
}

// ReplayChange is a past attempt that a policy decides otherwise than it
// was decided.
type ReplayChange struct {
	Attempt Attempt `json:"attempt"`
	// Now is the new policy's decision.
	Now Decision `json:"now"`
	// InBase reports that the base policy (the one that runs) already
	// decides it so: the difference comes from an earlier change, not
	// from this one.
	InBase bool `json:"in_base,omitempty"`
}

// ReplayReport is the outcome of [Replay].
type ReplayReport struct {
	// Attempts is the number of attempts replayed, Hosts the number of
	// distinct hostnames among them.
	Attempts int `json:"attempts"`
	Hosts    int `json:"hosts"`
	// NowRefused are past admissions the new policy refuses, NowAdmitted
	// past refusals it admits; newest first, as given.
	NowRefused  []ReplayChange `json:"now_refused"`
	NowAdmitted []ReplayChange `json:"now_admitted"`
}

// Replay decides past registration attempts again with the policy head and
// reports those it decides otherwise than they were decided: enrollments
// it would now refuse and refusals it would now admit. base, when not nil,
// is the policy the server runs: a change that base already makes is
// marked (InBase), so that a reviewer can tell what the pull request
// changes from what changed before it.
//
// A token is replayed only for attempts that a token admitted: then it is
// taken to be valid and bound to a pattern matching the hostname, so only
// a revocation refuses it now. A refused attempt that presented a token is
// replayed without one, since whether that token was valid is not a
// question of policy (and is not recorded).
func Replay(base, head *Policy, attempts []Attempt) ReplayReport {
	r := ReplayReport{NowRefused: []ReplayChange{}, NowAdmitted: []ReplayChange{}}
	hosts := map[string]bool{}
	for _, a := range attempts {
		r.Attempts++
		h, err := NormalizeHostname(a.Hostname)
		if err != nil {
			h = a.Hostname
		}
		hosts[h] = true
		req := Request{Hostname: a.Hostname, SourceIP: a.SourceIP}
		if a.Admitted && a.Token {
			req.Token = &TokenInfo{ID: "replayed", Pattern: h}
		}
		now := head.Decide(req)
		if now.Allowed == a.Admitted {
			continue
		}
		c := ReplayChange{Attempt: a, Now: now}
		if base != nil {
			c.InBase = base.Decide(req).Allowed == now.Allowed
		}
		if a.Admitted {
			r.NowRefused = append(r.NowRefused, c)
		} else {
			r.NowAdmitted = append(r.NowAdmitted, c)
		}
	}
	r.Hosts = len(hosts)
	return r
}

// Hostnames returns the distinct hostnames of changes, in order, at most
// n of them (all when n <= 0), and how many distinct hostnames there are.
func Hostnames(changes []ReplayChange, n int) (first []string, distinct int) {
	seen := map[string]bool{}
	for _, c := range changes {
		h, err := NormalizeHostname(c.Attempt.Hostname)
		if err != nil {
			h = c.Attempt.Hostname
		}
		if seen[h] {
			continue
		}
		seen[h] = true
		if n <= 0 || len(first) < n {
			first = append(first, h)
		}
	}
	return first, len(seen)
}
