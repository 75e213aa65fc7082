package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/vigo-enroll/vigo/policy"
)

// DiffMarker is the first line of the markdown diff report: CI finds the
// pull-request comment to update in place by it.
const DiffMarker = "<!-- vigocli policy diff -->"

// printDiffMarkdown writes the diff report as a pull-request comment: the
// marker, a title, the points a reviewer must see (envoys revoked or no
// longer admitted, past registrations decided otherwise, test decisions),
// then the whole text report in a folded block.
func printDiffMarkdown(w io.Writer, r diffReport, oldName, oldDesc, newDir, version string) {
	fmt.Fprintln(w, DiffMarker)
	nAdd, nRem, nChg := r.Added.Len(), r.Removed.Len(), r.Changed.Len()
	if nAdd+nRem+nChg == 0 {
		fmt.Fprintf(w, "### Enrollment policy: no rule or setting changes\n\n")
	} else {
		fmt.Fprintf(w, "### Enrollment policy: %d added, %d removed, %d changed\n\n", nAdd, nRem, nChg)
	}
	fmt.Fprintf(w, "Compared with %s.\n\n", oldDesc)

	var points []string
	if r.Envoys == nil {
		points = append(points, "Impact on envoys: not computed.")
	} else {
		n := r.newRevokes()
		switch {
		case n > 0:
			var hosts []string
			for _, rv := range r.Revokes {
				if !rv.InOld {
					hosts = append(hosts, code(rv.Envoy.Hostname))
				}
			}
			points = append(points, fmt.Sprintf(":warning: **%d active %s revoked**: %s", n, plural(n, "envoy", "envoys"), firstN(hosts, 10)))
		default:
			points = append(points, fmt.Sprintf("No active envoy revoked (of %d).", *r.Envoys))
		}
		if k := len(r.NoLongerAdmitted); k > 0 {
			var hosts []string
			for _, u := range r.NoLongerAdmitted {
				hosts = append(hosts, code(u.Envoy.Hostname))
			}
			points = append(points, fmt.Sprintf("%d active %s would not be admitted again (%s enrolled): %s",
				k, plural(k, "envoy", "envoys"), plural(k, "it stays", "they stay"), firstN(hosts, 10)))
		}
	}
	if rp := r.Replay; rp != nil {
		points = append(points, replayPoint(rp.NowRefused, rp.Period, "enrollment", "refused", true))
		points = append(points, replayPoint(rp.NowAdmitted, rp.Period, "refusal", "admitted", false))
	}
	if k := len(r.TestChanges); k > 0 {
		points = append(points, fmt.Sprintf("%d test %s decided differently.", k, plural(k, "case", "cases")))
	} else {
		points = append(points, "Test decisions: no change.")
	}
	for _, p := range points {
		fmt.Fprintf(w, "- %s\n", p)
	}

	var text bytes.Buffer
	printDiffText(&text, r, oldName, newDir)
	fence := "```"
	for strings.Contains(text.String(), fence) {
		fence += "`"
	}
	fmt.Fprintf(w, "\n<details><summary>The whole report</summary>\n\n%stext\n%s%s\n\n</details>\n\n", fence, text.String(), fence)
	fmt.Fprintf(w, "<sub>vigocli policy diff %s</sub>\n", version)
}

func replayPoint(changes []policy.ReplayChange, period, what, verb string, warn bool) string {
	if len(changes) == 0 {
		return fmt.Sprintf("Replay of the last %s: no past %s would now be %s.", period, what, verb)
	}
	first, hosts := policy.Hostnames(changes, 10)
	names := make([]string, len(first))
	for i, h := range first {
		names[i] = code(h)
	}
	if hosts > len(first) {
		names = append(names, fmt.Sprintf("and %d more", hosts-len(first)))
	}
	msg := fmt.Sprintf("%d past %s of the last %s would now be %s (%d %s): %s", len(changes), plural2(len(changes), what), period, verb,
		hosts, plural(hosts, "host", "hosts"), strings.Join(names, ", "))
	if warn {
		return ":warning: **" + msg + "**"
	}
	return msg
}

// firstN joins at most n items, saying how many more there are.
func firstN(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(", and %d more", len(items)-n)
}

// code writes s as inline code (hostnames; a backtick cannot occur in
// one, but is replaced to be safe).
func code(s string) string { return "`" + strings.ReplaceAll(s, "`", "'") + "`" }
