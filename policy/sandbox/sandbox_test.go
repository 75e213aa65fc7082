package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigo-enroll/vigo/policy"
)

func TestMain(m *testing.M) {
	RunIfChild()
	os.Exit(m.Run())
}

const good = `package policy

approved: ["web1.example.com"]
trusted_enrollment: [{name: "lan", pattern: "*.lan.example.com", cidrs: ["10.0.0.0/8"]}]
`

// memoryBomb doubles a string n times: 2^(n+1) bytes, in a few hundred
// bytes of CUE.
func memoryBomb(n int) string {
	var b strings.Builder
	b.WriteString("package policy\n_a0: \"xx\"\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "_a%d: _a%d + _a%d\n", i, i-1, i-1)
	}
	fmt.Fprintf(&b, "_n: len(_a%d)\n", n)
	return b.String()
}

// cpuBomb is a nested comprehension over n×n elements that keeps nothing.
func cpuBomb(n int) string {
	return fmt.Sprintf("package policy\nimport \"list\"\n_r: list.Range(0, %d, 1)\n_x: [for i in _r for j in _r if i == j && i < 0 {i}]\n", n)
}

func files(kv ...string) []policy.File {
	var fs []policy.File
	for i := 0; i+1 < len(kv); i += 2 {
		fs = append(fs, policy.File{Name: kv[i], Data: []byte(kv[i+1])})
	}
	return fs
}

func TestEvaluateValid(t *testing.T) {
	t.Parallel()
	spec, err := Evaluate(context.Background(), files("a.cue", good), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := spec.Compile("r1")
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(policy.Request{Hostname: "web1.example.com"}); !d.Allowed || d.Method != policy.MethodApproved {
		t.Errorf("Decide(web1) = %+v", d)
	}
	if c := p.Counts(); c.Trusted != 1 || c.Approved != 1 {
		t.Errorf("Counts() = %+v", c)
	}
}

func TestEvaluateInvalid(t *testing.T) {
	t.Parallel()
	_, err := Evaluate(context.Background(), files("a.cue", "package policy\napproved: [1]\n"), Limits{})
	var es policy.Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].File != "a.cue" || es[0].Line != 2 {
		t.Fatalf("Evaluate = %v, want one positioned error in a.cue", err)
	}
}

// TestMemoryBomb evaluates a string doubled 31 times (4 GiB asked for by
// 570 bytes): the child dies at its limit, the test process does not, and
// the error names the limit and the file.
func TestMemoryBomb(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		files    []policy.File
		wantFile string
	}{
		{"in one file", files("a.cue", good, "zz_bomb.cue", memoryBomb(31)), "zz_bomb.cue"},
		{"accepted before (2^26, about 500 MB)", files("a.cue", good, "b.cue", memoryBomb(26)), "b.cue"},
		{"across files", files("a.cue", good+"_a0: \"xx\"\n", "b.cue", strings.Replace(memoryBomb(31), "_a0: \"xx\"\n", "", 1)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lim := Limits{Memory: 128 << 20, Timeout: time.Minute}
			_, err := Evaluate(context.Background(), tt.files, lim)
			var be *BudgetError
			if !errors.As(err, &be) || be.Limit != "memory" || be.File != tt.wantFile {
				t.Fatalf("Evaluate = %v (%T), want a memory BudgetError in %q", err, err, tt.wantFile)
			}
			if !strings.Contains(err.Error(), "memory limit of 128 MiB") {
				t.Errorf("error %q does not name the limit", err)
			}
		})
	}
}

// TestCPUBomb evaluates a nested comprehension that takes minutes: the
// child is killed at the time limit and the error names the limit and the
// file.
func TestCPUBomb(t *testing.T) {
	t.Parallel()
	lim := Limits{Timeout: 2 * time.Second}
	_, err := Evaluate(context.Background(), files("a.cue", good, "slow.cue", cpuBomb(20000)), lim)
	var be *BudgetError
	if !errors.As(err, &be) || be.Limit != "time" || be.File != "slow.cue" {
		t.Fatalf("Evaluate = %v (%T), want a time BudgetError in slow.cue", err, err)
	}
	if !strings.Contains(err.Error(), "time limit of 2s while evaluating slow.cue") {
		t.Errorf("error %q does not name the limit and the file", err)
	}
	es, ok := Errors(err)
	if !ok || len(es) != 1 || es[0].File != "slow.cue" || !strings.Contains(es[0].Msg, "while evaluating this file") {
		t.Errorf("Errors(err) = %v, %v", es, ok)
	}
}

// TestCancel stops a runaway evaluation when the caller's context ends
// (a newer revision, a shutdown): it returns the context's error at once.
func TestCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Evaluate(ctx, files("slow.cue", cpuBomb(20000)), Limits{Timeout: time.Hour})
		done <- err
	}()
	// Cancel once the child is likely busy; earlier or later, the result
	// must be the same.
	time.AfterFunc(300*time.Millisecond, cancel)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Evaluate after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Evaluate did not return after its context was cancelled")
	}
}

// TestNotAnEvaluator runs a program that does not call RunIfChild: the
// error says so, and is not a refusal of the policy.
func TestNotAnEvaluator(t *testing.T) {
	t.Parallel()
	for _, argv := range [][]string{{"/bin/true"}, {"/bin/cat"}} {
		if _, err := os.Stat(argv[0]); err != nil {
			t.Skipf("%s: %v", argv[0], err)
		}
		e := &Evaluator{Command: argv}
		_, err := e.Evaluate(context.Background(), files("a.cue", good))
		if err == nil || !strings.Contains(err.Error(), "did not start the policy evaluator") {
			t.Errorf("%v: Evaluate = %v", argv, err)
		}
		if _, ok := Errors(err); ok {
			t.Errorf("%v: Errors(%v) is a refusal, want an error to retry", argv, err)
		}
	}
}

func TestLimitsCheck(t *testing.T) {
	t.Parallel()
	if err := (Limits{Memory: 1 << 20}).Check(); err == nil {
		t.Error("Check accepted a 1 MiB budget")
	}
	if err := (Limits{}).Check(); err != nil {
		t.Errorf("Check(defaults) = %v", err)
	}
}

func TestSizes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"256MiB": 256 << 20, "1.5GiB": 3 << 29, "1000": 1000, "2 GB": 2e9, "64KiB": 64 << 10} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1MiB", "1TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
	for n, want := range map[int64]string{256 << 20: "256 MiB", 3 << 29: "1.5 GiB", 900: "900 B"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
