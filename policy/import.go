package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/format"
)

// Legacy is the enrollment part of the original product's server.yaml:
// its bootstrap: section (trusted_enrollment, cert_validity, approved), and
// approved patterns kept elsewhere (the original stored them in its
// database, managed with "vigocli approved add"). The caller parses the
// YAML; [ImportLegacy] turns the values into policy files.
type Legacy struct {
	// Source names where the settings come from, for the comments of the
	// files: "server.yaml".
	Source string
	// Trusted are the entries of bootstrap.trusted_enrollment, in order.
	Trusted []LegacyTrusted
	// CertValidity is bootstrap.cert_validity ("" when absent): a Go
	// duration, or a number of days such as "90d".
	CertValidity string
	// Approved are the approved hostname patterns, and ApprovedSource
	// where they come from ("server.yaml bootstrap.approved").
	Approved       []string
	ApprovedSource string
}

// LegacyTrusted is an entry of bootstrap.trusted_enrollment: hosts whose
// name matches one of Patterns and whose source address is in one of
// CIDRs enroll without a token.
type LegacyTrusted struct {
	Name     string
	Patterns []string
	CIDRs    []string
	// Line is the line of the entry in Source (0 when unknown), for
	// errors.
	Line int
}

// ImportLegacy converts l into policy files: trusted.cue, approved.cue and
// settings.cue, for the parts l has, each with a comment naming its origin.
// An entry with several patterns becomes one entry per pattern (the
// original allowed a host matching any of them). Values are checked as the
// policy checks them; a problem names the entry. The caller vets the files
// before writing them.
func ImportLegacy(l Legacy) ([]File, error) {
	var errs []error
	bad := func(line int, format string, args ...any) {
		at := l.Source
		if line > 0 {
			at = fmt.Sprintf("%s:%d", l.Source, line)
		}
		errs = append(errs, fmt.Errorf("%s: %s", at, fmt.Sprintf(format, args...)))
	}
	var files []File
	if len(l.Trusted) > 0 {
		var b strings.Builder
		header(&b, fmt.Sprintf("Imported by \"vigocli policy import\" from %s (bootstrap.trusted_enrollment).", l.Source),
			"A host enrolls without a token when its hostname matches pattern AND its",
			"source address is in one of cidrs; the first matching entry is recorded.")
		b.WriteString("trusted_enrollment: [\n")
		names := map[string]bool{}
		for i, e := range l.Trusted {
			if len(e.Patterns) == 0 {
				bad(e.Line, "trusted_enrollment[%d] has no pattern", i)
			}
			if len(e.CIDRs) == 0 {
				bad(e.Line, "trusted_enrollment[%d] has no cidrs: list at least one source network", i)
			}
			var cidrs []string
			for _, c := range e.CIDRs {
				p, err := netip.ParsePrefix(strings.TrimSpace(c))
				switch {
				case err != nil:
					bad(e.Line, "trusted_enrollment[%d]: %q is not a network in CIDR notation, such as 10.0.0.0/8", i, c)
				case p != p.Masked():
					bad(e.Line, "trusted_enrollment[%d]: CIDR %s has host bits set: the original ignored them; write %s", i, c, p.Masked())
				default:
					cidrs = append(cidrs, p.String())
				}
			}
			for j, pat := range e.Patterns {
				g, err := CompileGlob(pat)
				if err != nil {
					bad(e.Line, "trusted_enrollment[%d]: %v", i, err)
					continue
				}
				var fields []kv
				if e.Name != "" {
					name := e.Name
					if len(e.Patterns) > 1 {
						name = fmt.Sprintf("%s-%d", e.Name, j+1)
					}
					if names[name] {
						bad(e.Line, "trusted_enrollment[%d]: name %q is used twice", i, name)
					}
					names[name] = true
					fields = append(fields, kv{"name", ast.NewString(name)})
				}
				fields = append(fields, kv{"pattern", ast.NewString(g.String())}, kv{"cidrs", strList(cidrs)})
				text, err := structText(fields, true, "\t")
				if err != nil {
					return nil, err
				}
				b.WriteString("\t" + text + ",\n")
			}
		}
		b.WriteString("]\n")
		files = append(files, File{Name: "trusted.cue", Data: []byte(b.String())})
	}
	if len(l.Approved) > 0 {
		src := l.ApprovedSource
		if src == "" {
			src = l.Source + " (bootstrap.approved)"
		}
		var b strings.Builder
		header(&b, fmt.Sprintf("Imported by \"vigocli policy import\" from %s.", src),
			"Hosts matching these patterns enroll from anywhere without a token.")
		b.WriteString("approved: [\n")
		seen := map[string]bool{}
		for _, a := range l.Approved {
			g, err := CompileGlob(a)
			if err != nil {
				bad(0, "approved: %v", err)
				continue
			}
			if seen[g.String()] {
				continue // the original kept a set
			}
			seen[g.String()] = true
			b.WriteString("\t" + cueString(g.String()) + ",\n")
		}
		b.WriteString("]\n")
		files = append(files, File{Name: "approved.cue", Data: []byte(b.String())})
	}
	if l.CertValidity != "" {
		v, err := legacyDuration(l.CertValidity)
		if err != nil {
			bad(0, "cert_validity: %v", err)
		}
		var b strings.Builder
		header(&b, fmt.Sprintf("Imported by \"vigocli policy import\" from %s (bootstrap.cert_validity: %s).", l.Source, l.CertValidity))
		b.WriteString("cert_validity: " + cueString(v) + "\n")
		files = append(files, File{Name: "settings.cue", Data: []byte(b.String())})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s has no bootstrap.trusted_enrollment, bootstrap.cert_validity or approved patterns: nothing to import", l.Source)
	}
	for i, f := range files {
		// Canonical layout, as cue fmt writes it.
		out, err := format.Source(f.Data)
		if err != nil {
			return nil, fmt.Errorf("format %s: %w", f.Name, err)
		}
		files[i].Data = out
	}
	return files, nil
}

func header(b *strings.Builder, lines ...string) {
	b.WriteString("package policy\n\n")
	for _, l := range lines {
		b.WriteString("// " + l + "\n")
	}
}

// legacyDuration accepts a Go duration, or a whole number of days ("90d",
// which Go durations cannot say), and returns it as a Go duration.
func legacyDuration(s string) (string, error) {
	if _, err := time.ParseDuration(s); err == nil {
		return s, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days > 0 && days <= 3650 {
			return strconv.Itoa(days*24) + "h", nil
		}
	}
	return "", fmt.Errorf("invalid duration %q: %s", s, durationHint)
}
