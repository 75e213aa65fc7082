package gitsync

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// waitTimeout is generous: the machine running the tests may be loaded.
// It bounds a wait, it is never the assertion.
const waitTimeout = 20 * time.Second

type scanEvent struct {
	start     time.Time
	signalled bool
}

// dirWatch runs a Dir watcher and records its scans.
type dirWatch struct {
	t    *testing.T
	dir  string
	d    *Dir
	mu   sync.Mutex
	cond chan struct{}
	log  []scanEvent
}

func startDirWatch(t *testing.T, dir string) *dirWatch {
	t.Helper()
	d, err := NewDir(DirConfig{Path: dir, Debounce: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w := &dirWatch{t: t, dir: dir, d: d, cond: make(chan struct{}, 1)}
	d.onScan = func(start time.Time, _ string, signalled bool) {
		w.mu.Lock()
		w.log = append(w.log, scanEvent{start, signalled})
		w.mu.Unlock()
		select {
		case w.cond <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w
}

// barrier returns once a scan has started after the call began: by then
// every change made before the call has been scanned. It returns how many
// scans since index from signalled.
func (w *dirWatch) barrier(from int) (signals, next int) {
	w.t.Helper()
	mark := time.Now()
	// A hidden file is ignored by the content hash but still makes an event.
	if err := os.WriteFile(filepath.Join(w.dir, ".barrier"), []byte(mark.String()), 0o644); err != nil {
		w.t.Fatal(err)
	}
	deadline := time.After(waitTimeout)
	for {
		w.mu.Lock()
		log := append([]scanEvent(nil), w.log...)
		w.mu.Unlock()
		for _, e := range log[from:] {
			if e.start.After(mark) {
				for _, e := range log[from:] {
					if e.signalled {
						signals++
					}
				}
				return signals, len(log)
			}
		}
		select {
		case <-w.cond:
		case <-deadline:
			w.t.Fatal("no scan after the barrier")
		}
	}
}

func (w *dirWatch) scans() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.log)
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const subMsg = "a .cue file in a subfolder is not part of the policy: move it to the top of the policy folder, or rename it if it is not policy"

func TestDirWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.cue"), "v1")
	w := startDirWatch(t, dir)
	d := w.d
	rev, changed, err := d.Fetch(context.Background())
	if err != nil || !changed {
		t.Fatalf("first Fetch: changed=%v err=%v", changed, err)
	}
	if !regexp.MustCompile(`^local@sha256:[0-9a-f]{64}$`).MatchString(rev.ID) {
		t.Errorf("ID = %q, want local@sha256:<hex>", rev.ID)
	}
	// Let the initial scan of Run happen, then drain a signal it may have
	// sent before Fetch recorded the content as seen.
	_, idx := w.barrier(0)
	select {
	case <-d.Changes():
	default:
	}

	steps := []struct {
		name   string
		mutate func()
		want   map[string]string // nil: no revision expected
	}{
		{
			name:   "edit",
			mutate: func() { writeFile(t, filepath.Join(dir, "a.cue"), "v2") },
			want:   map[string]string{"a.cue": "v2"},
		},
		{
			name: "rename save",
			mutate: func() {
				tmp := filepath.Join(dir, ".a.cue.tmp")
				writeFile(t, tmp, "v3")
				if err := os.Rename(tmp, filepath.Join(dir, "a.cue")); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"a.cue": "v3"},
		},
		{
			name:   "new file in a new folder",
			mutate: func() { writeFile(t, filepath.Join(dir, "sub", "b.cue"), "b1") },
			want:   map[string]string{"a.cue": "v3", "!sub/b.cue": subMsg},
		},
		{
			name: "edit in the new folder",
			mutate: func() {
				writeFile(t, filepath.Join(dir, "sub", "b.cue"), "b2") // the same problem: no signal alone
				writeFile(t, filepath.Join(dir, "a.cue"), "v4")
			},
			want: map[string]string{"a.cue": "v4", "!sub/b.cue": subMsg},
		},
		{
			name: "touch",
			mutate: func() {
				future := time.Now().Add(time.Hour)
				if err := os.Chtimes(filepath.Join(dir, "a.cue"), future, future); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "editor backup and swap files are ignored",
			mutate: func() {
				writeFile(t, filepath.Join(dir, "a.cue~"), "old")
				writeFile(t, filepath.Join(dir, ".b.swp"), "x")
			},
		},
		{
			name:   "files that are not policy are ignored",
			mutate: func() { writeFile(t, filepath.Join(dir, "README.md"), "# notes") },
		},
		{
			name: "delete",
			mutate: func() {
				if err := os.Remove(filepath.Join(dir, "a.cue")); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"!sub/b.cue": subMsg},
		},
		{
			name: "delete folder",
			mutate: func() {
				if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{},
		},
	}
	for _, st := range steps {
		st.mutate()
		if st.want != nil {
			select {
			case <-d.Changes():
			case <-time.After(waitTimeout):
				t.Fatalf("%s: no change signalled", st.name)
			}
		}
		var signals int
		signals, idx = w.barrier(idx)
		wantSignals := 0
		if st.want != nil {
			wantSignals = 1
		}
		if signals != wantSignals {
			t.Errorf("%s: %d change signals, want %d", st.name, signals, wantSignals)
		}
		select {
		case <-d.Changes():
			t.Errorf("%s: an extra change signal is pending", st.name)
		default:
		}
		rev2, changed, err := d.Fetch(context.Background())
		if err != nil {
			t.Fatalf("%s: Fetch: %v", st.name, err)
		}
		if changed != (st.want != nil) {
			t.Errorf("%s: Fetch changed = %v, want %v", st.name, changed, st.want != nil)
		}
		if st.want != nil {
			if diff := cmp.Diff(st.want, treeMap(rev2.Tree)); diff != "" {
				t.Errorf("%s: files (-want +got):\n%s", st.name, diff)
			}
			if rev2.ID == rev.ID {
				t.Errorf("%s: same ID %s after a change", st.name, rev.ID)
			}
		} else if rev2.ID != rev.ID {
			t.Errorf("%s: ID changed from %s to %s without a content change", st.name, rev.ID, rev2.ID)
		}
		rev = rev2
	}
	if w.scans() == 0 {
		t.Error("the watcher never scanned")
	}
}

func TestNewDirMissing(t *testing.T) {
	t.Parallel()
	if _, err := NewDir(DirConfig{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("NewDir of a missing folder succeeded")
	}
}
