// Package atomicfile writes files so that a reader, or the next start after
// a crash, sees the old content or the new one and never a half-written file.
//
// It is the one writer of state files in the module (keys, certificates,
// tokens, manifests, service units, edited policy files): the server, the
// agent and vigocli all use it, so it sits at the bottom layer with no
// dependency but the standard library.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write writes data to path through a temporary file in the same folder:
// mode perm is set before any byte is written (a private key is never
// readable by others, even for a moment), the data is fsync'ed, the file
// renamed over path and the folder fsync'ed. A missing folder is created
// with mode 0700; callers that need another mode create it first.
func Write(path string, data []byte, perm os.FileMode) error {
	return write(path, perm, bytesOf(data), os.Rename)
}

// WriteFrom is Write for content too large to hold in memory (a backup
// archive): fill streams it into the temporary file, and path is replaced
// only when fill returns nil.
func WriteFrom(path string, perm os.FileMode, fill func(io.Writer) error) error {
	return write(path, perm, fill, os.Rename)
}

func bytesOf(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
}

// WriteNew writes data to path like Write, but fails with an error matching
// fs.ErrExist when path already exists. The file is linked into place, so it
// never exists half-written and two writers racing for it never replace
// each other's file.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	return write(path, perm, bytesOf(data), os.Link)
}

func write(path string, perm os.FileMode, fill func(io.Writer) error, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // a no-op after a rename; the temporary name after a link
	err = f.Chmod(perm)
	if err == nil {
		err = fill(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = place(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // make the new name durable where the OS supports it
		d.Close()
	}
	return nil
}
