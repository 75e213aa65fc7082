package gitsync

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"slices"
	"strings"
	"time"
)

// Default limits of a policy folder.
const (
	// DefaultMaxFiles is the default cap on the number of files.
	DefaultMaxFiles = 1000
	// DefaultMaxFileSize is the default cap on the size of one file.
	DefaultMaxFileSize = 8 << 20
)

// snapshot collects the files of a policy folder in memory while enforcing
// the count and size caps. Reading everything up front makes a Revision safe
// to keep: later changes to the source cannot alter it.
type snapshot struct {
	maxFiles int
	maxSize  int64
	files    map[string][]byte
}

func newSnapshot(maxFiles int, maxSize int64) *snapshot {
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	if maxSize <= 0 {
		maxSize = DefaultMaxFileSize
	}
	return &snapshot{maxFiles: maxFiles, maxSize: maxSize, files: map[string][]byte{}}
}

// checkSize rejects a file before its content is read.
func (s *snapshot) checkSize(name string, size int64) error {
	if size > s.maxSize {
		return fmt.Errorf("read %s: %d bytes over the limit of %d: %w", name, size, s.maxSize, ErrTooLarge)
	}
	if len(s.files) >= s.maxFiles {
		return fmt.Errorf("read %s: more than %d files: %w", name, s.maxFiles, ErrTooLarge)
	}
	return nil
}

// add reads r (at most the size cap, whatever the announced size) into the snapshot.
func (s *snapshot) add(name string, size int64, r io.Reader) error {
	if err := s.checkSize(name, size); err != nil {
		return err
	}
	// LimitReader guards against a source whose announced size lies.
	b, err := io.ReadAll(io.LimitReader(r, s.maxSize+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > s.maxSize {
		return fmt.Errorf("read %s: over the limit of %d bytes: %w", name, s.maxSize, ErrTooLarge)
	}
	s.files[name] = b
	return nil
}

// hash is a content hash of the whole tree: the sorted paths with the
// SHA-256 of each file. Modification times do not count.
func (s *snapshot) hash() string {
	names := make([]string, 0, len(s.files))
	for n := range s.files {
		names = append(names, n)
	}
	slices.Sort(names)
	h := sha256.New()
	var n [8]byte
	for _, name := range names {
		binary.BigEndian.PutUint64(n[:], uint64(len(name)))
		h.Write(n[:])
		io.WriteString(h, name)
		sum := sha256.Sum256(s.files[name])
		h.Write(sum[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fs returns the snapshot as a read-only file system; mod is the
// modification time reported for every entry.
func (s *snapshot) fs(mod time.Time) fs.FS {
	m := &memFS{files: s.files, dirs: map[string][]fs.DirEntry{".": nil}, mod: mod}
	names := make([]string, 0, len(s.files))
	for n := range s.files {
		names = append(names, n)
	}
	slices.Sort(names)
	seen := map[string]bool{".": true}
	for _, name := range names {
		m.addEntry(name, false, int64(len(s.files[name])))
		for d := path.Dir(name); !seen[d]; d = path.Dir(d) {
			seen[d] = true
			m.addEntry(d, true, 0)
		}
	}
	for _, es := range m.dirs {
		slices.SortFunc(es, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	}
	return m
}

// memFS is an immutable in-memory file system.
type memFS struct {
	files map[string][]byte
	dirs  map[string][]fs.DirEntry
	mod   time.Time
}

func (m *memFS) addEntry(name string, dir bool, size int64) {
	parent := path.Dir(name)
	m.dirs[parent] = append(m.dirs[parent], &memInfo{name: path.Base(name), dir: dir, size: size, mod: m.mod})
	if dir {
		if _, ok := m.dirs[name]; !ok {
			m.dirs[name] = nil
		}
	}
}

// Open implements fs.FS.
func (m *memFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if b, ok := m.files[name]; ok {
		return &memFile{info: &memInfo{name: path.Base(name), size: int64(len(b)), mod: m.mod}, r: bytes.NewReader(b)}, nil
	}
	if es, ok := m.dirs[name]; ok {
		return &memDir{info: &memInfo{name: path.Base(name), dir: true, mod: m.mod}, entries: es}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

// ReadFile implements fs.ReadFileFS.
func (m *memFS) ReadFile(name string) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrInvalid}
	}
	b, ok := m.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	return slices.Clone(b), nil
}

// ReadDir implements fs.ReadDirFS.
func (m *memFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	es, ok := m.dirs[name]
	if !ok {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	return slices.Clone(es), nil
}

type memInfo struct {
	name string
	dir  bool
	size int64
	mod  time.Time
}

func (i *memInfo) Name() string { return i.name }
func (i *memInfo) Size() int64  { return i.size }
func (i *memInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}
func (i *memInfo) ModTime() time.Time         { return i.mod }
func (i *memInfo) IsDir() bool                { return i.dir }
func (i *memInfo) Sys() any                   { return nil }
func (i *memInfo) Type() fs.FileMode          { return i.Mode().Type() }
func (i *memInfo) Info() (fs.FileInfo, error) { return i, nil }

type memFile struct {
	info *memInfo
	r    *bytes.Reader
}

func (f *memFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *memFile) Read(b []byte) (int, error) { return f.r.Read(b) }
func (f *memFile) Close() error               { return nil }

type memDir struct {
	info    *memInfo
	entries []fs.DirEntry
	off     int
}

func (d *memDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *memDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: fs.ErrInvalid}
}
func (d *memDir) Close() error { return nil }

// ReadDir implements fs.ReadDirFile.
func (d *memDir) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return slices.Clone(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	if n > len(rest) {
		n = len(rest)
	}
	d.off += n
	return slices.Clone(rest[:n]), nil
}

// MapFS returns files (slash paths relative to the root -> content) as a
// read-only in-memory fs.FS like Revision.Files, with mod as every entry's
// modification time. The policy controller uses it to serve a persisted
// revision after a restart. The map is copied.
func MapFS(files map[string][]byte, mod time.Time) (fs.FS, error) {
	s := newSnapshot(math.MaxInt, math.MaxInt64)
	for name, b := range files {
		if !fs.ValidPath(name) || name == "." {
			return nil, fmt.Errorf("map fs: invalid path %q", name)
		}
		s.files[name] = slices.Clone(b)
	}
	for name := range s.files {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, ok := s.files[d]; ok {
				return nil, fmt.Errorf("map fs: %q is both a file and a folder", d)
			}
		}
	}
	return s.fs(mod), nil
}
