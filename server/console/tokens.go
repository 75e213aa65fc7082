package console

import (
	"net/http"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/store"
)

type tokensData struct {
	Tokens []tokenRow
	// Created is the token just issued: shown once.
	Created *admin.IssuedToken
	// Form holds what was typed when creating failed.
	Pattern, TTL, Note string
	Error              string
	// BootstrapCommand is the one-liner without a token.
	BootstrapCommand string
}

type tokenRow struct {
	store.Token
	State string
}

// maxTokensShown bounds the tokens listed, newest first.
const maxTokensShown = 500

func (c *Console) handleTokens(w http.ResponseWriter, r *http.Request, s *session) {
	c.showTokens(w, r, s, http.StatusOK, tokensData{TTL: policy.FormatDuration(admin.DefaultTokenTTL)})
}

func (c *Console) showTokens(w http.ResponseWriter, r *http.Request, s *session, code int, d tokensData) {
	ts, err := c.cfg.Store.ListTokens(r.Context())
	if err != nil {
		c.internal(w, r, s, "list tokens", err)
		return
	}
	now := c.cfg.Now()
	for i, t := range ts {
		if i == maxTokensShown {
			break
		}
		d.Tokens = append(d.Tokens, tokenRow{Token: t, State: admin.TokenState(t, now)})
	}
	d.BootstrapCommand = c.cfg.Ops.BootstrapCommand()
	c.render(w, r, code, "tokens", s, "Tokens", d)
}

func (c *Console) handleTokenCreate(w http.ResponseWriter, r *http.Request, s *session) {
	req := admin.TokenRequest{Pattern: r.PostFormValue("pattern"), TTL: r.PostFormValue("ttl"), Note: r.PostFormValue("note")}
	t, err := c.cfg.Ops.CreateToken(r.Context(), s.caller, req)
	if err != nil {
		code, ok := opStatus(err)
		if !ok {
			c.internal(w, r, s, "create token", err)
			return
		}
		c.showTokens(w, r, s, code, tokensData{Pattern: clip(req.Pattern, 253), TTL: clip(req.TTL, 32), Note: clip(req.Note, 500), Error: err.Error()})
		return
	}
	// The secret is in this answer only (no redirect that would need it
	// in a URL); no-store keeps it out of the browser's cache.
	c.showTokens(w, r, s, http.StatusCreated, tokensData{Created: &t, TTL: policy.FormatDuration(admin.DefaultTokenTTL)})
}

func (c *Console) handleTokenRevoke(w http.ResponseWriter, r *http.Request, s *session) {
	if _, err := c.cfg.Ops.RevokeToken(r.Context(), s.caller, r.PathValue("id")); err != nil {
		c.opFailed(w, r, s, "revoke token", err)
		return
	}
	http.Redirect(w, r, "/ui/tokens?done=token-revoked", http.StatusSeeOther)
}
