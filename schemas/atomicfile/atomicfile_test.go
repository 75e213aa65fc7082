package atomicfile_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

func TestWriteReplacesAndLeavesNoTemporaryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "folder")
	path := filepath.Join(dir, "key.pem")
	if err := atomicfile.Write(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(path, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "two" {
		t.Fatalf("content = %q, %v; want two", got, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", st.Mode().Perm())
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("created folder mode = %v, want 0700", dst.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries, want only key.pem: %v", len(entries), entries)
	}
}

func TestWriteNewNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.token")
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := map[string]bool{}
	for _, v := range []string{"a", "b", "c", "d"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := atomicfile.WriteNew(path, []byte(v), 0o600)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				t.Errorf("WriteNew(%s): %v, want nil or fs.ErrExist", v, err)
			}
			mu.Lock()
			won[v] = err == nil
			mu.Unlock()
		}()
	}
	wg.Wait()
	got, _ := os.ReadFile(path)
	n := 0
	for v, ok := range won {
		if ok {
			n++
			if string(got) != v {
				t.Errorf("file holds %q, but the writer that won wrote %q", got, v)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d writers won, want exactly 1", n)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("folder holds %d entries, want only admin.token", len(entries))
	}
}

func TestWriteIntoAFileFails(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(filepath.Join(blocker, "x"), []byte("x"), 0o600); err == nil {
		t.Fatal("writing under a regular file succeeded")
	}
}

func TestWriteFromKeepsTheOldFileWhenFillFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "backup.tar")
	if err := atomicfile.Write(path, []byte("good archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	err := atomicfile.WriteFrom(path, 0o600, func(w io.Writer) error {
		_, _ = w.Write([]byte("half an arch"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("WriteFrom: %v, want the fill error", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "good archive" {
		t.Errorf("content = %q: a failed write replaced the good file", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}
