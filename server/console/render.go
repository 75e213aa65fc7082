package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/admin"
)

// page is what the layout shows around a page's content.
type page struct {
	Title string
	// Nav is the section: "overview", "envoys", "policy", "tokens", "audit".
	Nav string
	// Caller is who is signed in (the zero Caller on the sign-in page).
	Caller admin.Caller
	// CanChange shows the action buttons.
	CanChange bool
	// CSRF is the session's form token.
	CSRF string
	// Flash is a message about what was just done.
	Flash string
	Now   time.Time
	Data  any
}

// render writes the named page with code.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name string, s *session, title string, data any) {
	p := page{Title: title, Nav: name, Now: c.cfg.Now(), Data: data}
	if s != nil {
		p.Caller, p.CanChange, p.CSRF = s.caller, s.caller.Allows(admin.Change), s.csrf
	}
	if f, ok := flashes[r.URL.Query().Get("done")]; ok && r.Method == http.MethodGet {
		p.Flash = f
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("render console page", "page", name, "err", err)
		http.Error(w, "internal error: see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// flashes are the messages a redirect after an action may show (by a
// fixed key: a link cannot make the console say anything else).
var flashes = map[string]string{
	"revoked":       "The envoy is revoked: its next check-in is refused.",
	"rebootstrap":   "The envoy will be asked to enroll again at its next check-in.",
	"update":        "The envoy will be asked to update its agent at its next check-in.",
	"token-revoked": "The token is revoked.",
}

type errorData struct {
	Message string
}

// fail shows an error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, code int, msg string) {
	c.render(w, r, code, "error", s, http.StatusText(code), errorData{Message: msg})
}

// internal logs an internal failure and shows a 500 page.
func (c *Console) internal(w http.ResponseWriter, r *http.Request, s *session, op string, err error) {
	c.log.Error(op, "err", err)
	c.fail(w, r, s, http.StatusInternalServerError, "Internal error: see the server log.")
}

var funcs = template.FuncMap{
	// when formats a time as UTC, to the second.
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	// ago says how long before now t was.
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return human(now.Sub(t)) + " ago"
	},
	// until says how long after now t is (or how long ago it passed).
	"until": func(now, t time.Time) string {
		if d := t.Sub(now); d > 0 {
			return "in " + human(d)
		}
		return human(now.Sub(t)) + " ago"
	},
	// short shortens a revision or a UUID for a table.
	"short": func(s string) string {
		if i := strings.LastIndex(s, ":"); i >= 0 && len(s)-i > 8 {
			s = s[i+1:]
		}
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	// with returns the query q with key set to value ("" removes it), for
	// links that change one filter and keep the others.
	"query": func(q url.Values, kv ...string) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		if len(v) == 0 {
			return "?"
		}
		return "?" + v.Encode()
	},
	// dict makes a map of key-value pairs, to pass several values to a
	// template.
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, errors.New("dict: odd number of arguments")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
	// condClass colours a policy condition: good, bad or neutral.
	"condClass": func(c apiv1.Condition) string {
		switch {
		case c.Type == apiv1.ConditionReady && c.Status == "True", c.Type == apiv1.ConditionStalled && c.Status == "False":
			return "good"
		case c.Type == apiv1.ConditionReady && c.Status == "False", c.Type == apiv1.ConditionStalled && c.Status == "True":
			return "bad"
		}
		return "neutral"
	},
	// dur formats a duration briefly (24h, 3m).
	"dur":         policy.FormatDuration,
	"policyError": policyError,
	"pos":         pos,
}

// human is a duration in words, to a useful precision.
func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// policyError formats an error of a policy revision as file:line:col:
// path: message (policy.Error's format).
func policyError(e apiv1.PolicyError) string {
	pe := policy.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message}
	return pe.Error()
}

// pos formats a position in a policy file.
func pos(p policy.Pos) string {
	switch {
	case p.File == "":
		return "(default)"
	case p.Line == 0:
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}
