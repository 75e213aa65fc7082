package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/policy"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
)

// replayReport is the replay part of a diff report.
type replayReport struct {
	// Period is the --replay period, such as "7d".
	Period string `json:"period"`
	// Events is the number of registration events read; Skipped those
	// that were not a policy decision (a malformed token, a rebootstrap).
	Events  int `json:"events"`
	Skipped int `json:"skipped"`
	// Capped reports that --replay-limit stopped the reading: older
	// attempts were not replayed.
	Capped bool `json:"capped"`
	policy.ReplayReport
}

// replayPage is the number of audit events asked for at once.
var replayPage = 1000

// replayAudit reads the registration attempts of the last period from the
// server's audit log, newest first, in pages, at most limit of them, and
// replays them against head (marking what base already decides so).
func replayAudit(ctx context.Context, g *globals, base, head *policy.Policy, period time.Duration, limit int) (*replayReport, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	r := &replayReport{}
	var attempts []policy.Attempt
	var before string // the cursor of the oldest event read so far
	for r.Events < limit {
		page := min(replayPage, limit-r.Events)
		q := url.Values{"order": {"newest"}, "type": {"registration"}, "since": {period.String()}, "limit": {strconv.Itoa(page)}}
		if before != "" {
			q.Set("before", before)
		}
		var evs []apiv1.AuditEvent
		if err := c.do(ctx, "GET", "/api/v1/audit?"+q.Encode(), nil, &evs); err != nil {
			return nil, fmt.Errorf("read registrations from the audit log: %w", err)
		}
		for _, e := range evs {
			r.Events++
			before = e.Cursor() // newest first: the last one is the oldest
			if a, ok := attemptOf(e); ok {
				attempts = append(attempts, a)
			} else {
				r.Skipped++
			}
		}
		if len(evs) < page {
			break
		}
		if r.Events >= limit {
			r.Capped = true
		}
	}
	r.ReplayReport = policy.Replay(base, head, attempts)
	return r, nil
}

// attemptOf reads a registration audit event as the server's enrollment
// writes it: "allowed", or "denied" with the method and rule of the
// policy's decision when the policy admitted it and something else
// refused it (the hostname was taken, the token used), and without a
// method when the policy refused it. Events that record no decision of
// the policy (a malformed token, a rebootstrap) are not attempts.
func attemptOf(e apiv1.AuditEvent) (policy.Attempt, bool) {
	ip, _ := netip.ParseAddr(e.SourceIP)
	a := policy.Attempt{ID: e.ID, At: e.At, Hostname: e.Hostname, SourceIP: ip, Rule: e.Rule}
	switch e.Method {
	case policy.MethodTrusted, policy.MethodApproved, policy.MethodToken:
		if e.Result != "allowed" && e.Rule == "" {
			return a, false // refused before the policy decided
		}
		a.Admitted = true
		a.Token = e.Method == policy.MethodToken
	case "":
		if e.Result == "allowed" {
			return a, false
		}
	default:
		return a, false
	}
	return a, true
}

// parseDays parses a Go duration, or a whole number of days ("7d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, err
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// replayText writes the replay section of the text report.
func replayText(w io.Writer, r *replayReport) {
	capped := ""
	if r.Capped {
		capped = fmt.Sprintf("; only the newest %d were read (--replay-limit)", r.Events)
	}
	fmt.Fprintf(w, "replay of the registrations of the last %s: %d %s from %d %s%s\n",
		r.Period, r.Attempts, plural(r.Attempts, "attempt", "attempts"), r.Hosts, plural(r.Hosts, "host", "hosts"), capped)
	section := func(changes []policy.ReplayChange, what, verb string) {
		first, hosts := policy.Hostnames(changes, 10)
		if len(changes) == 0 {
			fmt.Fprintf(w, "  no past %s would now be %s\n", what, verb)
			return
		}
		inBase := 0
		for _, c := range changes {
			if c.InBase {
				inBase++
			}
		}
		more := ""
		if hosts > len(first) {
			more = fmt.Sprintf(", and %d more", hosts-len(first))
		}
		base := ""
		if inBase > 0 {
			base = fmt.Sprintf("; %d of them already so with OLD", inBase)
		}
		fmt.Fprintf(w, "  %d past %s would now be %s (%d %s%s): %s%s\n", len(changes), plural2(len(changes), what), verb,
			hosts, plural(hosts, "host", "hosts"), base, strings.Join(first, ", "), more)
		for i, c := range changes {
			if i == 10 {
				fmt.Fprintf(w, "    … %d more\n", len(changes)-10)
				break
			}
			fmt.Fprintf(w, "    %s\n", replayChangeText(c))
		}
	}
	section(r.NowRefused, "enrollment", "refused")
	section(r.NowAdmitted, "refusal", "admitted")
}

// plural2 makes "enrollment" and "refusal" plural.
func plural2(n int, one string) string { return plural(n, one, one+"s") }

func replayChangeText(c policy.ReplayChange) string {
	from := "an unknown address"
	if c.Attempt.SourceIP.IsValid() {
		from = c.Attempt.SourceIP.String()
	}
	was := "refused"
	if c.Attempt.Admitted {
		was = "admitted by " + dash(c.Attempt.Rule)
	}
	old := ""
	if c.InBase {
		old = " (already so with OLD)"
	}
	return fmt.Sprintf("%s from %s at %s, %s: now %s%s", c.Attempt.Hostname, from, fmtTime(&c.Attempt.At), was, nowText(c.Now), old)
}

func nowText(d policy.Decision) string {
	if d.Allowed {
		return "admitted by " + d.Rule
	}
	return "refused: " + d.Reason
}

// checkoutRevision writes the policy folder dir as it is in rev (a commit
// of the repository dir is in) into a new temporary folder, and returns it
// with a function that removes it. what names rev in errors.
func checkoutRevision(ctx context.Context, dir, rev, what string) (string, func(), error) {
	prefix, err := git(ctx, dir, "rev-parse", "--show-prefix")
	if err != nil {
		return "", nil, &codeError{code: 2, err: fmt.Errorf("%s is not in a Git checkout of the policy repository (needed to read %s): %w", dir, what, err)}
	}
	prefix = strings.TrimSpace(prefix)
	top, err := git(ctx, dir, "rev-parse", "--show-toplevel")
	if err != nil {
		return "", nil, &codeError{code: 2, err: err}
	}
	top = strings.TrimSpace(top)
	if _, err := git(ctx, dir, "cat-file", "-e", rev+"^{commit}"); err != nil {
		return "", nil, &codeError{code: 2, err: fmt.Errorf("the checkout at %s does not have %s: git fetch it (the checkout needs the history: fetch-depth 0 in actions/checkout), or pass OLD_DIR", dir, what)}
	}
	tmp, err := os.MkdirTemp("", "vigocli-base-")
	if err != nil {
		return "", nil, &codeError{code: 2, err: err}
	}
	cleanup := func() { os.RemoveAll(tmp) }
	// From the top: git archive resolves paths from the current folder.
	cmd := exec.CommandContext(ctx, "git", "-C", top, "archive", "--format=tar", rev+":"+prefix)
	out, err := cmd.StdoutPipe()
	if err != nil {
		cleanup()
		return "", nil, &codeError{code: 2, err: err}
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		cleanup()
		return "", nil, &codeError{code: 2, err: fmt.Errorf("git archive: %w", err)}
	}
	xerr := untar(out, tmp)
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		cleanup()
		return "", nil, &codeError{code: 2, err: fmt.Errorf("read %s of %s: git archive: %s", prefix, what, strings.TrimSpace(errb.String()))}
	}
	if xerr != nil {
		cleanup()
		return "", nil, &codeError{code: 2, err: fmt.Errorf("read %s: %w", what, xerr)}
	}
	return tmp, cleanup, nil
}

// maxUntar bounds what checkoutRevision writes: the policy files are at
// most gitsync.MaxTotalSize, but the folder may hold other files.
const maxUntar = 512 << 20

// untar writes the folders, regular files and symbolic links of a tar
// stream (from git archive) into dir. Symbolic links are written as links:
// the tree reader refuses them as the server does, and never follows them.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	var total int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("untar: %w", err)
		}
		name := path.Clean(h.Name)
		if name == "." || strings.HasPrefix(name, "../") || path.IsAbs(name) {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			total += h.Size
			if total > maxUntar {
				return fmt.Errorf("untar: the folder is larger than %d MiB", maxUntar>>20)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, io.LimitReader(tr, h.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		}
	}
}
