// Package httpapi is the server's HTTPS API: the route table, the open
// bootstrap routes (script, agent downloads, registration), the admin API
// (tokens, envoys, audit, policy status), the policy webhook, health and
// metrics. Handlers translate between HTTP and the use cases; they hold no
// business rules of their own.
package httpapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/schemas/buildinfo"
	"github.com/vigo-enroll/vigo/server/admin"
	"github.com/vigo-enroll/vigo/server/bootstrap"
	"github.com/vigo-enroll/vigo/server/enroll"
	"github.com/vigo-enroll/vigo/server/ratelimit"
	"github.com/vigo-enroll/vigo/server/store"
)

// PolicyController is what the API needs of the policy controller.
type PolicyController interface {
	// Status returns the policy status of this replica.
	Status() apiv1.PolicyStatus
	// SyncNow syncs at once and returns the resulting status.
	SyncNow(ctx context.Context) (apiv1.PolicyStatus, error)
	// Trigger asks for a sync without waiting.
	Trigger()
	// Suspend, Resume, Pin and Unpin change the shared policy control;
	// actor is who asked (see policyctl.Controller).
	Suspend(ctx context.Context, reason, actor string) error
	Resume(ctx context.Context, actor string) error
	Pin(ctx context.Context, revision, reason, actor string) error
	Unpin(ctx context.Context, actor string) error
	// History lists the applied revisions, newest first.
	History(ctx context.Context, limit int) ([]apiv1.PolicyHistoryEntry, error)
}

// AgentDist serves agent binaries.
type AgentDist interface {
	HandleLatest(w http.ResponseWriter, r *http.Request)
	HandleDownload(w http.ResponseWriter, r *http.Request)
	HandleSigningKey(w http.ResponseWriter, r *http.Request)
}

// Config configures the API. Enroller, Store, Ops and Auth are required.
type Config struct {
	Enroller *enroll.Enroller
	Store    store.Store
	// Ops runs the admin use cases (tokens, envoy actions).
	Ops *admin.Ops
	// Auth authenticates admin credentials (Authorization: Bearer).
	Auth admin.Authenticator
	// Console serves the web console under /ui/ (and GET / redirects
	// there); nil serves none.
	Console http.Handler
	// Policy returns the active policy (nil when none is valid yet).
	Policy func() *policy.Policy
	// PolicyCtl serves status and sync; nil disables those routes.
	PolicyCtl PolicyController
	// Dist serves agent binaries; nil answers 404.
	Dist AgentDist
	// Bootstrap renders the bootstrap script for an OS ("" or "windows").
	Bootstrap func(goos string) ([]byte, string, error)
	// Judge explains to an envoy why the check-in service refuses its
	// certificate (GET /api/v1/agent/self); nil disables the route.
	Judge func(ctx context.Context, cert *x509.Certificate) (uuid, msg string, accepted bool, err error)
	// WebhookSecret is the policy webhook's shared secret; empty disables the webhook.
	WebhookSecret []byte
	// TrustedProxies may set X-Forwarded-For.
	TrustedProxies []netip.Prefix
	// PerAddress and PerNetwork limit the open routes per source address
	// and per source network (IPv4 /24, IPv6 /64); the zero Limit is off.
	PerAddress, PerNetwork ratelimit.Limit
	// PublicURL is the https://host:port agents and operators use.
	PublicURL string
	// Ready reports readiness for /readyz ("" = ready, else the reason).
	Ready func() string
	// Replica names this server.
	Replica string
	// Build is the server's build, served to administrators (zero:
	// buildinfo.Get()).
	Build buildinfo.Info
	// Registerer and Gatherer for metrics (nil = none / default).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// MetricsElsewhere takes GET /metrics off this handler: the server
	// serves MetricsHandler on its own listener (server.metrics_listen).
	// False (default): GET /metrics needs an admin token of any role.
	MetricsElsewhere bool
	Logger           *slog.Logger
	Now              func() time.Time
}

// API is the HTTP handler of the server.
type API struct {
	cfg      Config
	log      *slog.Logger
	perAddr  *ratelimit.Keyed[netip.Addr]
	perNet   *ratelimit.Keyed[netip.Prefix]
	hookLim  *ratelimit.Keyed[netip.Addr]
	duration *prometheus.HistogramVec
	metrics  http.Handler
	mux      *http.ServeMux
	table    []route // what routes() registered, with what each needs
}

// New returns the API handler.
func New(cfg Config) (*API, error) {
	if cfg.Enroller == nil || cfg.Store == nil || cfg.Ops == nil || cfg.Auth == nil {
		return nil, errors.New("httpapi: Enroller, Store, Ops and Auth are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Policy == nil {
		cfg.Policy = func() *policy.Policy { return nil }
	}
	if cfg.Ready == nil {
		cfg.Ready = func() string { return "" }
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}
	if cfg.Build == (buildinfo.Info{}) {
		cfg.Build = buildinfo.Get()
	}
	a := &API{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "httpapi"),
		perAddr: ratelimit.NewKeyed[netip.Addr](cfg.PerAddress, cfg.Now),
		perNet:  ratelimit.NewKeyed[netip.Prefix](cfg.PerNetwork, cfg.Now),
		hookLim: ratelimit.NewKeyed[netip.Addr](ratelimit.Limit{PerSecond: 10, Burst: 50}, cfg.Now), // a valid call only coalesces into one sync
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vigo_http_request_duration_seconds", Help: "HTTP request durations by route and code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "code"}),
	}
	a.metrics = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(a.duration); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	a.mux = a.routes()
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// routes is the whole route table.
func (a *API) routes() *http.ServeMux {
	m := http.NewServeMux()
	add := func(pattern string, x access, h http.Handler) {
		a.table = append(a.table, route{pattern, x})
		m.Handle(pattern, a.observe(pattern, h))
	}
	open := func(pattern string, h http.HandlerFunc) { add(pattern, accessOpen, a.rateLimited(h)) }
	// read and admin routes go through the one authorization check.
	read := func(pattern string, h http.HandlerFunc) { add(pattern, accessRead, a.authorize(accessRead, h)) }
	admin := func(pattern string, h http.HandlerFunc) { add(pattern, accessAdmin, a.authorize(accessAdmin, h)) }
	plain := func(pattern string, h http.HandlerFunc) { add(pattern, accessPublic, h) }
	hook := func(pattern string, h http.HandlerFunc) { add(pattern, accessHook, h) }

	// Open to anyone, rate-limited per source address.
	open("GET /bootstrap", a.handleBootstrap)
	open("POST /api/v1/bootstrap/register", jsonOnly(a.handleRegister))
	open("GET /api/v1/agent/latest", a.dist(func(d AgentDist) http.HandlerFunc { return d.HandleLatest }))
	open("GET /api/v1/agent/download/{os}/{arch}", a.dist(func(d AgentDist) http.HandlerFunc { return d.HandleDownload }))
	open("GET /api/v1/agent/self", a.handleAgentSelf)
	open("GET /api/v1/agent/signing-key", a.dist(func(d AgentDist) http.HandlerFunc { return d.HandleSigningKey }))

	// Authenticated by its HMAC, rate-limited.
	hook("POST /api/v1/policy/webhook", a.handleWebhook)

	// Health is public (load balancers ask it). Metrics on this port need
	// an admin token (the read-only role will do: Prometheus sends it as
	// authorization credentials), as everything here that is not for
	// enrolling hosts does; server.metrics_listen serves them without one,
	// on a listener of their own (the Prometheus convention).
	plain("GET /healthz", a.handleHealth)
	plain("GET /readyz", a.handleReady)
	if a.cfg.MetricsElsewhere {
		plain("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "metrics are not served on this port (see server.metrics_listen)")
		})
	} else {
		read("GET /metrics", a.handleMetrics)
	}

	// Admin API: read needs an admin token of any role (read-only
	// included: nothing here changes state), admin the role admin.
	admin("POST /api/v1/tokens", a.handleTokenCreate)
	read("GET /api/v1/tokens", a.handleTokenList)
	admin("DELETE /api/v1/tokens/{id}", a.handleTokenRevoke)
	read("GET /api/v1/envoys", a.handleEnvoyList)
	read("GET /api/v1/envoys/{id}", a.handleEnvoyShow)
	admin("POST /api/v1/envoys/{id}/revoke", a.handleEnvoyRevoke)
	admin("POST /api/v1/envoys/{id}/rebootstrap", a.handleEnvoyRebootstrap)
	admin("POST /api/v1/envoys/{id}/update", a.handleEnvoyUpdate)
	read("GET /api/v1/audit", a.handleAudit)
	read("GET /api/v1/policy/status", a.handlePolicyStatus)
	admin("POST /api/v1/policy/sync", a.handlePolicySync)
	admin("POST /api/v1/policy/suspend", a.handlePolicySuspend)
	admin("POST /api/v1/policy/resume", a.handlePolicyResume)
	admin("POST /api/v1/policy/pin", a.handlePolicyPin)
	admin("POST /api/v1/policy/unpin", a.handlePolicyUnpin)
	read("GET /api/v1/policy/history", a.handlePolicyHistory)
	read("POST /api/v1/policy/explain", a.handlePolicyExplain)
	read("GET /api/v1/version", a.handleVersion)
	admin("POST /api/v1/admin-tokens", a.handleAdminTokenCreate)
	admin("GET /api/v1/admin-tokens", a.handleAdminTokenList)
	admin("DELETE /api/v1/admin-tokens/{name}", a.handleAdminTokenRevoke)

	// Anything else under /api/ is unknown: for administrators only, so
	// that it reveals nothing.
	read("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", method(r), clip(r.URL.Path, 100)))
	})

	// The web console authenticates its own sessions (signed in with an
	// admin credential, checked by the same Caller.Allows).
	if a.cfg.Console != nil {
		plain("/ui/", a.cfg.Console.ServeHTTP)
		plain("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		})
	}
	plain("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s; the bootstrap script is at GET /bootstrap", method(r), clip(r.URL.Path, 100)))
	})
	return m
}

func (a *API) dist(pick func(AgentDist) http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Dist == nil {
			writeError(w, http.StatusNotFound, "no agent binaries are served: set agent.dist_dir and run `make dist`")
			return
		}
		pick(a.cfg.Dist)(w, r)
	}
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// observe records the request duration and turns a handler panic into a
// 500 with a log line instead of a dropped connection.
func (a *API) observe(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				a.log.Error("handler panic", "route", route, "err", fmt.Sprint(v))
				if sw.code == 0 {
					writeError(sw, http.StatusInternalServerError, "internal error")
				}
			}
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			a.duration.WithLabelValues(route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
	})
}

// rateLimited takes a token from the source address's bucket, then from
// its network's: rotating addresses within a /24 or /64 does not escape
// the limit, and one busy address spends only its own share of its
// network's. Requests with no source address (see clientAddr) share one
// bucket of each.
func (a *API) rateLimited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		src := a.sourceIP(r)
		if ok, wait := a.perAddr.Take(src); !ok {
			tooMany(w, wait, "too many requests from this address")
			return
		}
		if ok, wait := a.perNet.Take(network(src)); !ok {
			tooMany(w, wait, "too many requests from this network")
			return
		}
		h(w, r)
	}
}

// network is the IPv4 /24 or IPv6 /64 of addr (the zero Prefix for no
// address): the unit an attacker typically holds whole.
func network(addr netip.Addr) netip.Prefix {
	bits := 64
	if addr.Is4() {
		bits = 24
	}
	p, _ := addr.Prefix(bits)
	return p
}

// tooMany answers 429 with Retry-After, in whole seconds rounded up.
func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := int((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%s: retry in %d s", msg, secs))
}

// jsonOnly refuses a body that is not declared application/json with 415.
// Why: a browser sends text/plain, application/x-www-form-urlencoded and
// multipart/form-data cross-site without asking (a "simple" request, no
// CORS preflight); application/json needs a preflight, which this server
// never grants. So a web page visited by someone inside a trusted network
// cannot make the browser register (or force-replace) a host here.
func jsonOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "request body must be JSON sent with Content-Type: application/json")
			return
		}
		h(w, r)
	}
}

// SourceIP is the client address of r, as the open routes see it (see
// sourceIP); the console rate-limits sign-ins by it.
func (a *API) SourceIP(r *http.Request) netip.Addr { return a.sourceIP(r) }

// sourceIP is the TCP peer, or the client named in X-Forwarded-For when the
// peer is a configured trusted proxy (see clientAddr). Trusting the header
// from anyone else would let a client pick the address that trusted
// enrollment checks. The invalid netip.Addr means "no source address": no
// CIDR contains it.
func (a *API) sourceIP(r *http.Request) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		addr, _ := netip.ParseAddr(host)
		return addr.Unmap()
	}
	return clientAddr(peer.Addr().Unmap(), r.Header.Values("X-Forwarded-For"), a.trusted)
}

func (a *API) trusted(addr netip.Addr) bool {
	for _, p := range a.cfg.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// handleAgentSelf answers an envoy that presents its client certificate
// (verified against the CA by the TLS layer) with its own standing only.
func (a *API) handleAgentSelf(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Judge == nil {
		writeError(w, http.StatusNotFound, "not available")
		return
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		writeError(w, http.StatusUnauthorized, "present this envoy's client certificate (signed by the server's CA)")
		return
	}
	uuid, msg, ok, err := a.cfg.Judge(r.Context(), r.TLS.PeerCertificates[0])
	if err != nil {
		a.internal(w, "judge envoy certificate", err)
		return
	}
	writeJSON(w, http.StatusOK, apiv1.AgentSelf{UUID: uuid, Accepted: ok, Message: msg})
}

// MetricsHandler serves GET /metrics, /healthz and /readyz, for the
// separate metrics listener (server.metrics_listen).
func (a *API) MetricsHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /metrics", a.handleMetrics)
	m.HandleFunc("GET /healthz", a.handleHealth)
	m.HandleFunc("GET /readyz", a.handleReady)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s; this listener serves GET /metrics, /healthz and /readyz", method(r), clip(r.URL.Path, 100)))
	})
	return m
}

func (a *API) handleMetrics(w http.ResponseWriter, r *http.Request) { a.metrics.ServeHTTP(w, r) }

func (a *API) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) handleReady(w http.ResponseWriter, r *http.Request) {
	if reason := a.cfg.Ready(); reason != "" {
		writeError(w, http.StatusServiceUnavailable, reason)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (a *API) handleBootstrap(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Bootstrap == nil {
		writeError(w, http.StatusNotFound, "bootstrap script not configured")
		return
	}
	goos := r.URL.Query().Get("os")
	script, ctype, err := a.cfg.Bootstrap(goos)
	switch {
	case errors.Is(err, bootstrap.ErrUnsupportedOS):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("no bootstrap script for os=%s: leave os out for Unix (sh), or use os=windows (PowerShell)", clip(goos, 16)))
		return
	case err != nil:
		a.internal(w, "render bootstrap script", err)
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(script)
}

// maxBody caps request bodies of JSON routes.
const maxBody = 64 << 10

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return fmt.Errorf("request body larger than %d bytes", maxBody)
		case errors.As(err, &te):
			return fmt.Errorf("field %s: expected %s", te.Field, te.Type)
		case errors.As(err, &se):
			return fmt.Errorf("request body is not valid JSON: %v", err)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			// encoding/json has no typed error for DisallowUnknownFields;
			// its message is the only place that names the field.
			name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
			return fmt.Errorf("request body has an unknown field %s", clip(name, 40))
		default:
			return fmt.Errorf("request body is not valid JSON: %v", err)
		}
	}
	if dec.More() {
		return errors.New("request body has data after the JSON object")
	}
	return nil
}

// clip quotes client input for a message: at most n bytes of it (cut at a
// character boundary, "…" marking the cut), with control and non-printable
// characters escaped as by %q, so that a refusal never repeats an
// unbounded value or writes raw control bytes into a terminal or a log.
func clip(s string, n int) string {
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// method is the request method for a message: net/http admits only token
// characters in it, so it needs a length bound, not quoting.
func method(r *http.Request) string {
	if len(r.Method) > 16 {
		return r.Method[:16] + "…"
	}
	return r.Method
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiv1.Error{Error: msg})
}
