package server

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigo-enroll/vigo/policy/sandbox"
	"github.com/vigo-enroll/vigo/server/ca"
)

// Config is the typed content of server.yaml. The zero value of every field
// is a sensible default, filled in by Defaults.
type Config struct {
	Server    ServerConfig    `yaml:"server"`
	Database  DatabaseConfig  `yaml:"database"`
	Policy    PolicyConfig    `yaml:"policy"`
	Admin     AdminConfig     `yaml:"admin"`
	Bootstrap BootstrapConfig `yaml:"bootstrap"`
	Agent     AgentConfig     `yaml:"agent"`
	// Notifications are sent to receivers outside the server.
	Notifications NotificationsConfig `yaml:"notifications"`
}

// NotificationsConfig is the `notifications:` section.
type NotificationsConfig struct {
	// Receivers get the events they ask for (see package notify).
	Receivers []ReceiverConfig `yaml:"receivers"`
	// RefusalThreshold sends a "refusals" event when at least Count
	// registrations are refused within Window (off when Count is 0).
	RefusalThreshold struct {
		Count  int      `yaml:"count"`
		Window Duration `yaml:"window"`
	} `yaml:"refusal_threshold"`
}

// ReceiverConfig is one entry of `notifications.receivers`.
type ReceiverConfig struct {
	Name string `yaml:"name"`
	// Kind is "webhook" (signed JSON) or "slack" (a text message).
	Kind string `yaml:"kind"`
	// URL, or URLFile holding it (a Slack webhook URL is a secret).
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
	// SecretFile holds the HMAC secret of a webhook (16 characters or more).
	SecretFile string `yaml:"secret_file"`
	// Events are the event types delivered (default: all but evaluating).
	Events []string `yaml:"events"`
}

// ServerConfig is the `server:` section.
type ServerConfig struct {
	// GRPCListen is the check-in listener (default ":1530").
	GRPCListen string `yaml:"grpc_listen"`
	// APIListen is the HTTPS listener (default ":8443").
	APIListen string `yaml:"api_listen"`
	// Hostname is the address agents are told to dial (default: the host name).
	Hostname string `yaml:"hostname"`
	// DataDir holds the CA, the database and the admin token (default "./vigo-data").
	DataDir string `yaml:"data_dir"`
	// TLS says where the certificates are, relative to DataDir.
	TLS TLSConfig `yaml:"tls"`
	// TLSSANs are extra names and addresses for the server certificate.
	TLSSANs []string `yaml:"tls_sans"`
	// TrustedProxies are addresses or CIDRs whose X-Forwarded-For is honoured.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Replica names this server in status and audit (default: the host name).
	Replica string `yaml:"replica"`
	// GRPCIdleTimeout closes check-in connections idle for longer (0 keeps
	// them). Set it below bootstrap.checkin_interval for large fleets: memory
	// then stays flat, each check-in pays a TLS handshake (see BENCHMARKS.md).
	GRPCIdleTimeout Duration `yaml:"grpc_idle_timeout"`
	// MetricsListen, when set, is a separate plain-HTTP listener for
	// GET /metrics (and /healthz, /readyz), the Prometheus convention; the
	// public HTTPS port then serves no metrics. Empty (default): /metrics
	// is served on the public port, rate-limited like the open routes.
	MetricsListen string `yaml:"metrics_listen"`
	// ReplicaRefresh bounds how long a change made through another replica
	// (a revocation, a renewal, a flag) takes to reach this replica's
	// check-in cache (default 10s). Changes made here apply at once.
	ReplicaRefresh Duration `yaml:"replica_refresh"`
}

// TLSConfig is `server.tls`.
type TLSConfig struct {
	// CertFile and KeyFile are the HTTPS listener's certificate. Unset (or
	// tls/cert and tls/key), it is issued by Vigo's CA and also serves
	// gRPC. Elsewhere, they are the operator's (e.g. from Let's Encrypt),
	// re-read when they change; gRPC keeps a certificate from Vigo's CA.
	CertFile  string `yaml:"cert_file"`
	KeyFile   string `yaml:"key_file"`
	CAFile    string `yaml:"ca_file"`
	CAKeyFile string `yaml:"ca_key_file"`
	// ResponseSigningKeyFile is the Ed25519 key that signs check-in
	// responses (default tls/response_signing_key); agents pin its public
	// key at registration, so replicas must share it.
	ResponseSigningKeyFile string `yaml:"response_signing_key_file"`
	// KeyExchange is the key exchange of check-in handshakes: "hybrid"
	// (default: post-quantum X25519MLKEM768) or "x25519" (cheaper per
	// handshake, not post-quantum).
	KeyExchange string `yaml:"key_exchange"`
}

// DatabaseConfig is the `database:` section.
type DatabaseConfig struct {
	// Driver is "sqlite" (default) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is the SQLite file (default DataDir/vigo.db) or the PostgreSQL URL.
	DSN string `yaml:"dsn"`
	// DSNFile reads the DSN from a file (for secrets).
	DSNFile string `yaml:"dsn_file"`
	// Retention prunes audit events and revoked envoys older than this (0 = keep).
	Retention Duration `yaml:"retention"`
}

// PolicyConfig is the `policy:` section: exactly one of Dir and Git.
type PolicyConfig struct {
	// Dir is a local policy folder, watched for changes and reloaded on SIGHUP.
	Dir string `yaml:"dir"`
	// Git is a policy repository.
	Git *GitConfig `yaml:"git"`
	// WebhookSecretFile holds the shared secret of POST /api/v1/policy/webhook.
	WebhookSecretFile string `yaml:"webhook_secret_file"`
	// EvalLimits is the budget of evaluating one policy revision.
	EvalLimits EvalLimits `yaml:"eval_limits"`
	// Feedback posts a commit status for each revision to the forge.
	Feedback *FeedbackConfig `yaml:"feedback"`
}

// FeedbackConfig is `policy.feedback`: commit statuses on the forge that
// hosts the policy repository (needs policy.git).
type FeedbackConfig struct {
	// Kind is github, gitlab or gitea (also Forgejo).
	Kind string `yaml:"kind"`
	// APIURL is the forge's API root (defaults for github and gitlab).
	APIURL string `yaml:"api_url"`
	// Repository is owner/repo or the GitLab project path (default: from
	// policy.git.url).
	Repository string `yaml:"repository"`
	// TokenFile holds a token allowed to write commit statuses.
	TokenFile string `yaml:"token_file"`
	// Context names the status (default vigo/policy).
	Context string `yaml:"context"`
	// TargetURL, when set, is linked from each status.
	TargetURL string `yaml:"target_url"`
}

// EvalLimits is `policy.eval_limits`: each revision is evaluated in a child
// process that cannot use more memory or time; a revision over budget is
// refused like an invalid one.
type EvalLimits struct {
	// Memory is the most memory one evaluation may use (default 256MiB).
	Memory Size `yaml:"memory"`
	// Timeout is the longest one evaluation may run (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// Limits returns the limits for package sandbox.
func (l EvalLimits) Limits() sandbox.Limits {
	return sandbox.Limits{Memory: int64(l.Memory), Timeout: time.Duration(l.Timeout)}
}

// GitConfig is `policy.git`.
type GitConfig struct {
	URL      string   `yaml:"url"`
	Ref      string   `yaml:"ref"`
	Path     string   `yaml:"path"`
	Interval Duration `yaml:"interval"`
	Timeout  Duration `yaml:"timeout"`
	Auth     struct {
		TokenFile      string `yaml:"token_file"`
		Username       string `yaml:"username"`
		SSHKeyFile     string `yaml:"ssh_key_file"`
		KnownHostsFile string `yaml:"known_hosts_file"`
	} `yaml:"auth"`
	Verify struct {
		SSHAllowedSignersFile string `yaml:"ssh_allowed_signers_file"`
		OpenPGPKeyringFile    string `yaml:"openpgp_keyring_file"`
		// Mode is "head" (the head commit is checked, the default) or
		// "all" (every commit since the last verified head).
		Mode string `yaml:"mode"`
	} `yaml:"verify"`
}

// AdminConfig is the `admin:` section.
type AdminConfig struct {
	// TokenFile is where the generated admin token is written for vigocli
	// (default DataDir/admin.token). Only its SHA-256 is kept beside it.
	TokenFile string `yaml:"token_file"`
}

// BootstrapConfig is the `bootstrap:` section.
type BootstrapConfig struct {
	RateLimit RateLimit `yaml:"rate_limit"`
	// CheckinInterval is the interval given to agents (default 1m).
	CheckinInterval Duration `yaml:"checkin_interval"`
	// CheckinRateLimit bounds each envoy's gRPC requests (default 1 per
	// second, burst 20); PerSecond -1 disables it (load tests).
	CheckinRateLimit Limit `yaml:"checkin_rate_limit"`
}

// Limit is a token bucket: PerSecond refill (negative: off), Burst size.
type Limit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// RateLimit bounds the open endpoints with token buckets: per source
// address, per source network, and for the whole server on the bcrypt path.
type RateLimit struct {
	// PerSecond is the refill rate per source address (default 5).
	// Negative disables the limit.
	PerSecond float64 `yaml:"per_second"`
	// Burst is the bucket size per source address (default 20).
	Burst int `yaml:"burst"`
	// NetworkPerSecond is the refill rate per source network, an IPv4 /24
	// or an IPv6 /64, shared by all its addresses (default 4 × PerSecond;
	// off when PerSecond is). Negative disables it.
	NetworkPerSecond float64 `yaml:"network_per_second"`
	// NetworkBurst is the bucket size per source network (default 4 × Burst).
	NetworkBurst int `yaml:"network_burst"`
	// TokenChecksPerSecond is the refill rate of registrations carrying a
	// token, for the whole server: each costs a bcrypt comparison, about
	// 50 ms of a core (default 10). Negative disables it.
	TokenChecksPerSecond float64 `yaml:"token_checks_per_second"`
	// TokenChecksBurst is its bucket size (default 20).
	TokenChecksBurst int `yaml:"token_checks_burst"`
}

// AgentConfig is the `agent:` section.
type AgentConfig struct {
	// DistDir holds the agent binaries and manifest.json (default DataDir/dist).
	DistDir string `yaml:"dist_dir"`
	// Version, when set, is the version every envoy is asked to update to.
	Version string `yaml:"version"`
	// SigningKeyFile is the public key of the offline agent signing key.
	SigningKeyFile string `yaml:"signing_key_file"`
}

// Size is a number of bytes written as "256MiB", "1GiB" or a plain number
// in YAML.
type Size int64

// UnmarshalYAML parses "256MiB", "1.5GiB", "1000000".
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if s == "" {
		*z = 0
		return nil
	}
	v, err := sandbox.ParseSize(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*z = Size(v)
	return nil
}

// Duration is a time.Duration written as a Go duration string in YAML.
type Duration time.Duration

// UnmarshalYAML parses "90s", "1h30m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (examples: 30s, 5m, 1h)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// Defaults fills in every unset field.
func (c *Config) Defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.Server.GRPCListen, ":1530")
	def(&c.Server.APIListen, ":8443")
	def(&c.Server.DataDir, "./vigo-data")
	host, _ := os.Hostname()
	def(&c.Server.Hostname, host)
	def(&c.Server.Replica, host)
	def(&c.Database.Driver, "sqlite")
	rl := &c.Bootstrap.RateLimit
	if rl.PerSecond == 0 {
		rl.PerSecond = 5
	}
	if rl.Burst == 0 {
		rl.Burst = 20
	}
	if rl.NetworkPerSecond == 0 {
		rl.NetworkPerSecond = 4 * rl.PerSecond // negative (off) when per_second is
	}
	if rl.NetworkBurst == 0 {
		rl.NetworkBurst = 4 * rl.Burst
	}
	if rl.TokenChecksPerSecond == 0 {
		rl.TokenChecksPerSecond = 10
	}
	if rl.TokenChecksBurst == 0 {
		rl.TokenChecksBurst = 20
	}
	if c.Bootstrap.CheckinInterval == 0 {
		c.Bootstrap.CheckinInterval = Duration(time.Minute)
	}
	if cl := &c.Bootstrap.CheckinRateLimit; cl.PerSecond == 0 {
		cl.PerSecond = 1
	}
	if cl := &c.Bootstrap.CheckinRateLimit; cl.Burst == 0 {
		cl.Burst = 20
	}
	if g := c.Policy.Git; g != nil {
		def(&g.Ref, "main")
		if g.Interval == 0 {
			g.Interval = Duration(time.Minute)
		}
		if g.Timeout == 0 {
			g.Timeout = Duration(30 * time.Second)
		}
	}
}

// LoadConfig reads server.yaml. An empty path gives the built-in defaults.
// Unknown keys are errors naming the key.
func LoadConfig(path string) (*Config, error) {
	c := &Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := ParseConfig(data, c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		if path != "" {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, err
	}
	return c, nil
}

// ParseConfig decodes YAML into c, refusing unknown keys.
func ParseConfig(data []byte, c *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("parse YAML: %w", err)
	}
	if len(root.Content) == 0 {
		return nil
	}
	if err := checkKeys(root.Content[0], reflect.TypeOf(*c), ""); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("parse YAML: %w", err)
	}
	return nil
}

var movedToPolicy = map[string]string{
	"bootstrap.trusted_enrollment": "trusted_enrollment",
	"bootstrap.cert_validity":      "cert_validity",
	"bootstrap.approved":           "approved",
}

// checkKeys walks a mapping node against a struct type, so an unknown key
// is reported with its full dotted name and line.
func checkKeys(n *yaml.Node, t reflect.Type, prefix string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || n.Kind != yaml.MappingNode {
		return nil
	}
	fields := map[string]reflect.Type{}
	var known []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f.Type
		known = append(known, name)
	}
	slices.Sort(known)
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		full := prefix + k.Value
		if to, ok := movedToPolicy[full]; ok {
			errs = append(errs, fmt.Errorf("line %d: %s is no longer a server setting: it now lives in the policy repository as `%s` (see examples/policy)", k.Line, full, to))
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: unknown key %s (known keys here: %s)", k.Line, full, strings.Join(known, ", ")))
			continue
		}
		if err := checkKeys(v, ft, full+"."); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Validate checks values that YAML types cannot.
func (c *Config) Validate() error {
	var errs []error
	switch c.Server.TLS.KeyExchange {
	case "", "hybrid", "x25519":
	default:
		errs = append(errs, fmt.Errorf("server.tls.key_exchange %q: must be hybrid (the default, post-quantum) or x25519", c.Server.TLS.KeyExchange))
	}
	switch c.Database.Driver {
	case "sqlite", "postgres":
	default:
		errs = append(errs, fmt.Errorf("database.driver %q: must be sqlite or postgres", c.Database.Driver))
	}
	if c.Database.Driver == "postgres" && c.Database.DSN == "" && c.Database.DSNFile == "" {
		errs = append(errs, errors.New("database.driver is postgres: set database.dsn or database.dsn_file"))
	}
	if c.Policy.Dir != "" && c.Policy.Git != nil {
		errs = append(errs, errors.New("policy: set exactly one of policy.dir and policy.git, not both"))
	}
	if g := c.Policy.Git; g != nil {
		if g.URL == "" {
			errs = append(errs, errors.New("policy.git.url is required"))
		}
		if g.Interval < Duration(time.Second) {
			errs = append(errs, errors.New("policy.git.interval must be at least 1s"))
		}
	}
	if _, err := c.TrustedProxyPrefixes(); err != nil {
		errs = append(errs, err)
	}
	if f := c.Policy.Feedback; f != nil {
		if c.Policy.Git == nil {
			errs = append(errs, errors.New("policy.feedback needs policy.git: commit statuses are posted for commits"))
		}
		if f.TokenFile == "" {
			errs = append(errs, errors.New("policy.feedback.token_file is required"))
		}
	}
	for i, r := range c.Notifications.Receivers {
		if (r.URL == "") == (r.URLFile == "") {
			errs = append(errs, fmt.Errorf("notifications.receivers[%d] (%s): set exactly one of url and url_file", i, r.Name))
		}
		if r.Kind == "webhook" && r.SecretFile == "" {
			errs = append(errs, fmt.Errorf("notifications.receivers[%d] (%s): a webhook needs secret_file", i, r.Name))
		}
	}
	if t := c.Notifications.RefusalThreshold; t.Count > 0 && t.Window <= 0 {
		errs = append(errs, errors.New("notifications.refusal_threshold.window is required with a count"))
	}
	if err := c.Policy.EvalLimits.Limits().Check(); err != nil {
		errs = append(errs, fmt.Errorf("policy.eval_limits: %w", err))
	}
	if c.Policy.EvalLimits.Timeout < 0 {
		errs = append(errs, errors.New("policy.eval_limits.timeout must not be negative"))
	}
	if cert, _ := c.HTTPSCertPaths(); cert != "" && (c.Server.TLS.CertFile == "" || c.Server.TLS.KeyFile == "") {
		errs = append(errs, errors.New("server.tls: an HTTPS certificate of your own needs both cert_file and key_file"))
	}
	rl := c.Bootstrap.RateLimit
	for _, b := range []struct {
		name  string
		rate  float64
		burst int
	}{
		{"", rl.PerSecond, rl.Burst}, {"network_", rl.NetworkPerSecond, rl.NetworkBurst},
		{"token_checks_", rl.TokenChecksPerSecond, rl.TokenChecksBurst},
	} {
		if b.rate > 0 && b.burst < 1 {
			errs = append(errs, fmt.Errorf("bootstrap.rate_limit.%sburst must be at least 1 when %sper_second is on", b.name, b.name))
		}
	}
	if cl := c.Bootstrap.CheckinRateLimit; cl.PerSecond > 0 && cl.Burst < 1 {
		errs = append(errs, errors.New("bootstrap.checkin_rate_limit.burst must be at least 1 when per_second is on"))
	}
	if c.Bootstrap.CheckinInterval < Duration(time.Second) {
		errs = append(errs, errors.New("bootstrap.checkin_interval must be at least 1s"))
	}
	return errors.Join(errs...)
}

// StatePaths are the files that hold a server's state: what a backup
// copies and a restore puts back.
type StatePaths struct {
	// CACert and CAKey are Vigo's CA (server.tls.ca_file, ca_key_file).
	CACert, CAKey string
	// SigningKey signs check-in responses (server.tls.response_signing_key_file).
	SigningKey string
	// AdminToken is where the admin token is written for vigocli
	// (admin.token_file); AdminTokenHash is what the server checks;
	// AdminTokenPrevious holds the previous token's hash and expiry during
	// a rotation (vigosrv admin-token rotate).
	AdminToken, AdminTokenHash, AdminTokenPrevious string
	// Database is the SQLite file; "" with PostgreSQL.
	Database string
}

// StatePaths resolves where the state files are under this configuration
// (server.tls.* relative to server.data_dir).
func (c *Config) StatePaths() StatePaths {
	data := c.Server.DataDir
	var p StatePaths
	p.CACert, p.CAKey = ca.Config{Dir: data, CAFile: c.Server.TLS.CAFile, CAKeyFile: c.Server.TLS.CAKeyFile}.CAPaths()
	p.SigningKey = c.Server.TLS.ResponseSigningKeyFile
	if p.SigningKey == "" {
		p.SigningKey = filepath.Join("tls", "response_signing_key")
	}
	if !filepath.IsAbs(p.SigningKey) {
		p.SigningKey = filepath.Join(data, p.SigningKey)
	}
	p.AdminToken = c.Admin.TokenFile
	if p.AdminToken == "" {
		p.AdminToken = filepath.Join(data, "admin.token")
	}
	p.AdminTokenHash = p.AdminToken + ".sha256"
	p.AdminTokenPrevious = p.AdminToken + ".previous.sha256"
	if c.Database.Driver != "postgres" {
		p.Database = c.Database.DSN
		if p.Database == "" {
			p.Database = filepath.Join(data, "vigo.db")
		}
	}
	return p
}

// HTTPSCertPaths returns the operator's certificate and key for the HTTPS
// listener, or "", "" when it presents the certificate Vigo's CA issues
// (server.tls.cert_file and key_file unset, or at tls/cert and tls/key).
func (c *Config) HTTPSCertPaths() (cert, key string) {
	abs := func(p, def string) string {
		if p == "" {
			p = def
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(c.Server.DataDir, p)
		}
		return filepath.Clean(p)
	}
	cert, key = abs(c.Server.TLS.CertFile, "tls/cert"), abs(c.Server.TLS.KeyFile, "tls/key")
	if cert == abs("", "tls/cert") && key == abs("", "tls/key") {
		return "", ""
	}
	return cert, key
}

// TrustedProxyPrefixes parses server.trusted_proxies (addresses or CIDRs).
func (c *Config) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.Server.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("server.trusted_proxies: %q is neither an address nor a CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
