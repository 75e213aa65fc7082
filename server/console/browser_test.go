package console_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/vigo-enroll/vigo/policy/sandbox"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// The browser tests start a real server (servertest) and drive headless
// Chromium with chromedp, as an operator would click: nothing is faked
// between the browser and the store.

var updateScreenshots = flag.Bool("update-screenshots", false, "write the console screenshots to docs/screenshots (README shows them)")

func TestMain(m *testing.M) {
	sandbox.RunIfChild() // the test servers evaluate policy in a child: this binary
	flag.Parse()
	code := m.Run()
	servertest.RemoveAgentBinaries()
	os.Exit(code)
}

// chromiumPath finds Chromium, or skips the test saying loudly why: only a
// missing browser may skip these tests (.ci/run installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	names := []string{"chromium", "chromium-browser", "google-chrome"}
	if p := os.Getenv("VIGO_CHROMIUM"); p != "" {
		names = []string{p}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := "!!! BROWSER TEST SKIPPED: Chromium is not installed (apt-get install chromium; .ci/run installs it), " +
		"so the web console was NOT tested in a browser"
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
	return ""
}

// browser is a headless Chromium with a fresh profile, and one tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu   sync.Mutex
	errs []string // JavaScript exceptions and console errors (CSP violations)
}

// Viewport of the tests and screenshots.
const viewportW, viewportH = 1280, 860

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path := chromiumPath(t)
	if testing.Short() {
		t.Skip("starts a browser")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(viewportW, viewportH),
		// The test server's certificate comes from its own CA.
		chromedp.IgnoreCertErrors,
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	// Every step of a test has this deadline at most.
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancel(); cancelTab(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, base: base}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(viewportW, viewportH), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, log.Enable, cdp.Empty{}); err != nil {
			return err
		}
		return nil
	})); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	go func() {
		for ev, err := range chromedp.Events(ctx, runtime.ExceptionThrown) {
			if err != nil {
				return
			}
			b.addErr("exception: " + ev.ExceptionDetails.Text)
		}
	}()
	go func() {
		for ev, err := range chromedp.Events(ctx, log.EntryAdded) {
			if err != nil {
				return
			}
			if ev.Entry.Level == log.EntryLevelError && !strings.Contains(ev.Entry.Text, "status of 4") && !strings.Contains(ev.Entry.Text, "favicon") {
				b.addErr(string(ev.Entry.Source) + ": " + ev.Entry.Text)
			}
		}
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errs {
			t.Errorf("browser reported an error: %s", e)
		}
	})
	return b
}

func (b *browser) addErr(s string) {
	b.mu.Lock()
	b.errs = append(b.errs, s)
	b.mu.Unlock()
}

// do runs actions, failing the test on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v (at %s)", what, err, b.location())
	}
}

// open loads a console path and returns the HTTP status of the page.
func (b *browser) open(path string) int64 {
	b.t.Helper()
	resp, err := chromedp.Run(b.ctx, chromedp.NavigateResponse(b.base+path))
	if err != nil {
		b.t.Fatalf("browser: open %s: %v", path, err)
	}
	return resp.Status
}

// submit clicks a button (or link) that loads a page and returns the
// page's HTTP status.
func (b *browser) submit(sel string) int64 {
	b.t.Helper()
	resp, err := chromedp.RunResponse(b.ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: click %s: %v (at %s)", sel, err, b.location())
	}
	return resp.Status
}

// fill sets a form field.
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	b.do("fill "+sel, chromedp.SetValue(chromedp.CSS(sel), value))
}

// text is the visible text of the first element matching sel (waiting
// for it).
func (b *browser) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: text of %s: %v (at %s)", sel, err, b.location())
	}
	return s
}

// eval evaluates a JavaScript expression in the page (awaiting it when it
// is a promise).
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// has reports whether an element matches sel now (without waiting).
func (b *browser) has(sel string) bool {
	b.t.Helper()
	q, _ := json.Marshal(sel)
	return eval[bool](b, "document.querySelector("+string(q)+") !== null")
}

// count is the number of elements matching sel now.
func (b *browser) count(sel string) int {
	b.t.Helper()
	q, _ := json.Marshal(sel)
	return eval[int](b, "document.querySelectorAll("+string(q)+").length")
}

// location is the page's URL.
func (b *browser) location() string {
	u, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		return "?"
	}
	return u
}

// path is the page's path and query, without the server.
func (b *browser) path() string {
	return strings.TrimPrefix(b.location(), b.base)
}

// waitFor polls cond (a JavaScript expression) until it is true, up to a
// deadline, without reloading the page.
func (b *browser) waitFor(what, cond string) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !eval[bool](b, cond) {
		if time.Now().After(deadline) {
			b.t.Fatalf("browser: %s: not within 30s (at %s)", what, b.location())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot takes a PNG of the viewport; with -update-screenshots it is
// written to docs/screenshots/NAME.png, which the README shows.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	// The viewport at 3/4 scale: legible, and small files for the README.
	png, err := chromedp.Run(b.ctx, chromedp.Action[[]byte](func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
		r, err := cdp.Call(ctx, tg, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format: page.CaptureScreenshotFormatPng,
			Clip:   &page.Viewport{Width: viewportW, Height: viewportH, Scale: 0.75},
		})
		if err != nil {
			return nil, err
		}
		return r.Data, nil
	}))
	if err != nil {
		b.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	dir := b.t.TempDir()
	if *updateScreenshots {
		dir = filepath.Join("..", "..", "docs", "screenshots")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// signIn signs in with a credential from the sign-in page and returns the
// status of the page it lands on.
func (b *browser) signIn(credential string) int64 {
	b.t.Helper()
	if !strings.HasPrefix(b.path(), "/ui/sign-in") {
		b.open("/ui/sign-in")
	}
	b.fill("#credential", credential)
	return b.submit("#sign-in")
}
