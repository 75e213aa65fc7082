package console_test

import (
	"fmt"
	"html"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vigo-enroll/vigo/server/console"
	"github.com/vigo-enroll/vigo/server/store"
)

var (
	rowRE   = regexp.MustCompile(`class="envoy" href="/ui/envoys/[^"]+">([^<]+)<`)
	nextRE  = regexp.MustCompile(`id="next" href="([^"]+)"`)
	prevRE  = regexp.MustCompile(`id="prev" href="([^"]+)"`)
	totalRE = regexp.MustCompile(`id="envoy-total">([0-9]+\+?) envoys match`)
)

// pageOf returns the hostnames of an envoys page and its links.
func pageOf(t *testing.T, c *client, path string) (hosts []string, prev, next string) {
	hosts, prev, next, _ = pageTotal(t, c, path)
	return hosts, prev, next
}

// pageTotal is pageOf, and the page's count of matching envoys.
func pageTotal(t *testing.T, c *client, path string) (hosts []string, prev, next, total string) {
	t.Helper()
	resp, body := c.get(path)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d\n%s", path, resp.StatusCode, body)
	}
	for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
		hosts = append(hosts, m[1])
	}
	if m := prevRE.FindStringSubmatch(body); m != nil {
		prev = "/ui/envoys" + html.UnescapeString(m[1])
	}
	if m := nextRE.FindStringSubmatch(body); m != nil {
		next = "/ui/envoys" + html.UnescapeString(m[1])
	}
	if m := totalRE.FindStringSubmatch(body); m != nil {
		total = m[1]
	}
	return hosts, prev, next, total
}

// TestEnvoysPages: following Next through a filtered, sorted list shows
// every envoy once, in order, PageSize at a time; Previous walks back the
// same pages.
func TestEnvoysPages(t *testing.T) {
	f := newFixture(t, nil)
	const n = 2*console.PageSize + 17
	var all []store.Envoy
	for i := range n {
		// Hostnames in another order than creation.
		all = append(all, enroll(t, f.store, i, fmt.Sprintf("h%03d.%s.example.com", (i*37)%n, []string{"web", "db"}[i%2]), t0.Add(time.Duration(i)*time.Second)))
	}
	c := f.client()
	c.signIn(adminSecret)
	tests := []struct {
		name  string
		query string
		want  func() []string
	}{
		{"by hostname", "", func() []string { return hostnames(all, nil, strings.Compare) }},
		{"by hostname, reversed", "?desc=1", func() []string {
			return hostnames(all, nil, func(a, b string) int { return strings.Compare(b, a) })
		}},
		{"web only, by enrollment", "?q=.web.&sort=created", func() []string {
			var out []string
			for _, e := range all {
				if strings.Contains(e.Hostname, ".web.") {
					out = append(out, e.Hostname)
				}
			}
			return out
		}},
		{"method token, newest first", "?method=token&sort=created&desc=1", func() []string {
			var out []string
			for i := len(all) - 1; i >= 0; i-- {
				if all[i].Method == "token" {
					out = append(out, all[i].Hostname)
				}
			}
			return out
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want()
			var got [][]string
			path := "/ui/envoys" + tc.query
			var last string
			for path != "" {
				hosts, _, next, total := pageTotal(t, c, path)
				if len(hosts) > console.PageSize {
					t.Fatalf("%d envoys on a page", len(hosts))
				}
				if total != fmt.Sprint(len(want)) {
					t.Errorf("%s: %s envoys match, want %d", path, total, len(want))
				}
				got = append(got, hosts)
				last, path = path, next
			}
			if diff := cmp.Diff(want, slices.Concat(got...)); diff != "" {
				t.Errorf("pages forwards (-want +got):\n%s", diff)
			}
			// Back from the last page.
			_, prev, _ := pageOf(t, c, last)
			for i := len(got) - 2; i >= 0; i-- {
				if prev == "" {
					t.Fatalf("no Previous link back to page %d", i+1)
				}
				var hosts []string
				hosts, prev, _ = pageOf(t, c, prev)
				if diff := cmp.Diff(got[i], hosts); diff != "" {
					t.Errorf("page %d backwards (-want +got):\n%s", i+1, diff)
				}
			}
			if prev != "" {
				t.Errorf("the first page has a Previous link %q", prev)
			}
		})
	}
}

func hostnames(es []store.Envoy, keep func(store.Envoy) bool, cmp func(a, b string) int) []string {
	var out []string
	for _, e := range es {
		if keep == nil || keep(e) {
			out = append(out, e.Hostname)
		}
	}
	slices.SortFunc(out, cmp)
	return out
}

// TestEnvoysStale: an active envoy not seen for three check-in intervals
// is stale: counted on the overview, marked and filtered on the list.
func TestEnvoysStale(t *testing.T) {
	f := newFixture(t, nil)
	fresh := enroll(t, f.store, 1, "fresh.example.com", t0)
	enroll(t, f.store, 2, "quiet.example.com", t0)
	never := enroll(t, f.store, 3, "never.example.com", t0.Add(-time.Hour))
	gone := enroll(t, f.store, 4, "gone.example.com", t0.Add(-time.Hour))
	if _, err := f.store.RevokeEnvoys(t.Context(), []store.Revocation{{UUID: gone.UUID, Reason: "x", At: t0}}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(10 * time.Minute)
	if err := f.store.RecordCheckins(t.Context(), []store.Checkin{
		{UUID: fresh.UUID, At: f.clock.Now().Add(-time.Minute)},
		{UUID: "00000000-0000-4000-8000-000000000002", At: f.clock.Now().Add(-4 * time.Minute)},
	}); err != nil {
		t.Fatal(err)
	}
	c := f.client()
	c.signIn(adminSecret)
	hosts, _, _ := pageOf(t, c, "/ui/envoys?status=active&stale=1")
	if diff := cmp.Diff([]string{"never.example.com", "quiet.example.com"}, hosts); diff != "" {
		t.Errorf("stale envoys (-want +got):\n%s", diff)
	}
	_, body := c.get("/ui/")
	for _, want := range []string{`id="active-count">3<`, `id="stale-count">2<`, `id="revoked-count">1<`} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %s", want)
		}
	}
	_, body = c.get("/ui/envoys/" + never.UUID)
	if !strings.Contains(body, `<span class="tag warn">stale</span>`) {
		t.Error("a stale envoy's page does not say so")
	}
}
