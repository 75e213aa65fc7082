package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is the quiet period after the last file event before a
// local folder is rescanned, when DirConfig.Debounce is zero.
const DefaultDebounce = 200 * time.Millisecond

// DirConfig configures a local folder source.
type DirConfig struct {
	// Path is the policy folder.
	Path string
	// Debounce is the quiet period after the last file event before the
	// folder is rescanned (DefaultDebounce when zero).
	Debounce time.Duration
	// Logger receives logs; nil discards them.
	Logger *slog.Logger
}

// Dir is a Source and Notifier over a local folder, for development. Run
// watches every directory of the tree with fsnotify (so that editors that
// save by writing a temporary file and renaming it over the original are
// seen like any other write), waits until events stop for Debounce,
// rescans, and signals Changes only when the content hash differs from the
// last one signalled or fetched: touching a file, or changing a file that
// is not policy (README.md, an editor's swap file), signals nothing.
//
// The folder is read with the tree rules of ReadDir, like a Git tree.
type Dir struct {
	root     string
	debounce time.Duration
	log      *slog.Logger
	changes  chan struct{}

	fetchMu  sync.Mutex // one Fetch at a time, so that d.last only moves forward
	mu       sync.Mutex
	last     *Revision
	lastHash string
	notified string // hash (or error) last signalled or fetched

	onScan func(start time.Time, key string, signalled bool) // test hook, called by Run after each scan
}

var (
	_ Source   = (*Dir)(nil)
	_ Notifier = (*Dir)(nil)
)

// NewDir checks that cfg.Path is a folder and returns a Dir source.
func NewDir(cfg DirConfig) (*Dir, error) {
	root, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("new dir source %s: %w", cfg.Path, err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("new dir source: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("new dir source %s: not a folder", root)
	}
	d := &Dir{
		root:     root,
		debounce: cfg.Debounce,
		log:      cfg.Logger,
		changes:  make(chan struct{}, 1),
	}
	if d.debounce <= 0 {
		d.debounce = DefaultDebounce
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d, nil
}

// String implements Source.
func (d *Dir) String() string { return "dir:" + d.root }

// Changes implements Notifier. Signals are coalesced: one pending signal
// at most.
func (d *Dir) Changes() <-chan struct{} { return d.changes }

// Fetch implements Source: it scans the folder and returns its revision,
// with changed false when the content is the same as at the last Fetch.
func (d *Dir) Fetch(ctx context.Context) (Revision, bool, error) {
	if err := ctx.Err(); err != nil {
		return Revision{}, false, err
	}
	d.fetchMu.Lock()
	defer d.fetchMu.Unlock()
	tree, mod, err := readDir(d.root)
	if err != nil {
		return Revision{}, false, err
	}
	h := tree.hash()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.notified = h
	if d.last != nil && d.lastHash == h {
		return *d.last, false, nil
	}
	id := "local@sha256:" + h
	rev := Revision{ID: id, Name: id, Tree: tree, Time: mod}
	d.last, d.lastHash = &rev, h
	return rev, true, nil
}

// hidden reports whether the watcher ignores a folder: the tree rules
// never enter it.
func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// Run watches the folder until ctx is done. It returns nil on cancellation
// and an error only when the watcher cannot be set up.
func (d *Dir) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", d.root, err)
	}
	defer w.Close()
	if err := d.watchTree(w, d.root); err != nil {
		return fmt.Errorf("watch %s: %w", d.root, err)
	}
	// A first scan catches changes made before the watch was in place.
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				// A new folder (or one renamed into the tree) must be watched too.
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() && !hidden(fi.Name()) {
					if err := d.watchTree(w, ev.Name); err != nil {
						d.log.Warn("watch new folder", "err", err)
					}
				}
			}
			timer.Reset(d.debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost: watch everything again and rescan.
				d.log.Warn("file events overflowed, rescanning", "err", err)
				if err := d.watchTree(w, d.root); err != nil {
					d.log.Warn("rewatch", "err", err)
				}
			} else {
				d.log.Warn("file watcher", "err", err)
			}
			timer.Reset(d.debounce)
		case <-timer.C:
			d.rescan()
		}
	}
}

// rescan signals Changes when the content (or the scan error) differs
// from what was last signalled or fetched.
func (d *Dir) rescan() {
	key, start := "", time.Now()
	tree, _, err := readDir(d.root)
	if err != nil {
		key = "error:" + err.Error()
		d.log.Warn("scan policy folder", "err", err)
	} else {
		key = tree.hash()
	}
	d.mu.Lock()
	signal := key != d.notified
	if signal {
		d.notified = key
	}
	hook := d.onScan
	d.mu.Unlock()
	if signal {
		d.log.Debug("policy folder changed", "revision", key)
		select {
		case d.changes <- struct{}{}:
		default: // a signal is already pending
		}
	}
	if hook != nil {
		hook(start, key, signal)
	}
}

// watchTree adds a watch on dir and every folder below it.
func (d *Dir) watchTree(w *fsnotify.Watcher, dir string) error {
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if !e.IsDir() {
			return nil
		}
		if p != d.root && hidden(e.Name()) {
			return filepath.SkipDir
		}
		return w.Add(p)
	})
}
