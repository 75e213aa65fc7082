package gitsync

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The tree rules. This is the one place that decides which files of a
// policy folder count, for the server's Git and folder sources and for every
// vigocli command (through ReadDir), so that what `vigocli policy vet`
// accepts is what the server applies. Given the folder (the repository's
// policy.git.path, or policy.dir), every entry is judged by its path:
//
//  1. A name starting with "." is ignored, and a folder so named is not
//     entered: .git, .github, editor files (.approved.cue.swp, .#approved.cue).
//  2. The folder cue.mod at the top is ignored (policies import only CUE
//     builtin packages, so nothing in it is needed).
//  3. A name ending in ".cue" is a policy file when it is a regular file at
//     the top of the folder and does not start with "_". Anything else named
//     *.cue refuses the revision, because an author would expect it to count:
//     a .cue file in a subfolder, one starting with "_" (CUE leaves both
//     out), a symbolic link, a submodule or another special file.
//  4. Everything else — README.md, LICENSE, docs/, CI files, images,
//     symbolic links and submodules not named *.cue — is ignored: never
//     read into memory, never stored.
//
// At most MaxFiles policy files and MaxTotalSize bytes of them in all are
// read; a revision with more is refused.
const (
	// MaxFiles is the largest number of policy (.cue) files in a revision.
	MaxFiles = 1000
	// MaxTotalSize is the largest size of the policy files of a revision,
	// in all (so also of any one of them).
	MaxTotalSize = 8 << 20
	// maxProblems bounds the problems recorded for one revision.
	maxProblems = 50
)

// File is a policy file of a revision.
type File struct {
	// Name is the file name, relative to the policy folder (a policy file
	// is always at its top).
	Name string
	// Data is the content.
	Data []byte
}

// Problem is a reason to refuse a revision found in its file tree, such as
// a .cue file in a subfolder.
type Problem struct {
	// Path names the entry, relative to the policy folder ("" for the
	// folder itself).
	Path string
	// Msg says what is wrong and what to do.
	Msg string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Tree is the content of a policy folder after the tree rules: the policy
// files and the problems that refuse the revision.
type Tree struct {
	// Files are the policy files, sorted by name.
	Files []File
	// Problems are the reasons to refuse the revision, in walk order; a
	// revision with problems must be refused like an invalid policy.
	Problems []Problem
	// Ignored counts the entries that were ignored (and not read).
	Ignored int
}

// kind is the type of a tree entry.
type kind int

const (
	kindFile kind = iota
	kindDir
	kindSymlink
	kindSubmodule
	kindOther
)

// treeReader applies the tree rules to the entries of a walk.
type treeReader struct {
	Tree
	total    int
	overflow bool      // a cap was hit: later policy files are not read
	dropped  int       // problems beyond maxProblems
	newest   time.Time // the newest modification time of a policy file
}

// opened is a policy file being read: its content, announced size and
// modification time.
type opened struct {
	r    io.ReadCloser
	size int64
	mod  time.Time
}

// visit judges one entry (rel is slash-separated, relative to the policy
// folder). open is called only for a policy file. It returns skip for a
// folder that must not be entered.
func (t *treeReader) visit(rel string, k kind, open func() (opened, error)) (skip bool, err error) {
	base := path.Base(rel)
	top := path.Dir(rel) == "."
	switch {
	case strings.HasPrefix(base, "."):
		t.Ignored++
		return k == kindDir, nil
	case k == kindDir && top && base == "cue.mod":
		t.Ignored++
		return true, nil
	case k == kindDir:
		return false, nil
	case !strings.HasSuffix(base, ".cue"):
		t.Ignored++
		return false, nil
	case k == kindSymlink:
		t.problem(rel, "a policy file may not be a symbolic link: replace the link by the file, or rename it if it is not policy")
		return false, nil
	case k == kindSubmodule:
		t.problem(rel, "a policy file may not be a submodule")
		return false, nil
	case k != kindFile:
		t.problem(rel, "not a regular file")
		return false, nil
	case !top:
		t.problem(rel, "a .cue file in a subfolder is not part of the policy: move it to the top of the policy folder, or rename it if it is not policy")
		return false, nil
	case strings.HasPrefix(base, "_"):
		t.problem(rel, `CUE leaves out files whose name starts with "_": rename it`)
		return false, nil
	}
	if t.overflow {
		return false, nil
	}
	if len(t.Files) >= MaxFiles {
		t.overflow = true
		t.problem(rel, fmt.Sprintf("too many .cue files: a policy may have at most %d", MaxFiles))
		return false, nil
	}
	o, err := open()
	if err != nil {
		return false, fmt.Errorf("read %s: %w", rel, err)
	}
	defer o.r.Close()
	if o.size < 0 || int64(t.total)+o.size > MaxTotalSize {
		t.overflow = true
		t.problem(rel, fmt.Sprintf("policy too large: the .cue files may hold at most %d bytes in all", MaxTotalSize))
		return false, nil
	}
	// LimitReader guards against a source whose announced size lies.
	b, err := io.ReadAll(io.LimitReader(o.r, int64(MaxTotalSize-t.total)+1))
	if err != nil {
		return false, fmt.Errorf("read %s: %w", rel, err)
	}
	if t.total+len(b) > MaxTotalSize {
		t.overflow = true
		t.problem(rel, fmt.Sprintf("policy too large: the .cue files may hold at most %d bytes in all", MaxTotalSize))
		return false, nil
	}
	t.total += len(b)
	t.Files = append(t.Files, File{Name: rel, Data: b})
	if o.mod.After(t.newest) {
		t.newest = o.mod
	}
	return false, nil
}

func (t *treeReader) problem(rel, msg string) {
	if len(t.Problems) >= maxProblems {
		t.dropped++
		return
	}
	t.Problems = append(t.Problems, Problem{Path: rel, Msg: msg})
}

// done returns the tree, its files sorted by name.
func (t *treeReader) done() Tree {
	if t.dropped > 0 {
		t.Problems = append(t.Problems, Problem{Msg: fmt.Sprintf("and %d more problems", t.dropped)})
	}
	slices.SortFunc(t.Files, func(a, b File) int { return cmp.Compare(a.Name, b.Name) })
	return t.Tree
}

// ReadDir reads the policy folder dir with the tree rules. The error is an
// I/O error (dir cannot be read); problems with the content are in
// Tree.Problems. Symbolic links are never followed.
func ReadDir(dir string) (Tree, error) {
	t, _, err := readDir(dir)
	return t, err
}

// readDir is ReadDir that also returns the newest modification time of a
// policy file.
func readDir(dir string) (Tree, time.Time, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Tree{}, time.Time{}, fmt.Errorf("read policy folder: %w", err)
	}
	defer root.Close()
	t := &treeReader{}
	err = fs.WalkDir(root.FS(), ".", func(rel string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		k := kindOther
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			k = kindSymlink
		case e.IsDir():
			k = kindDir
		case e.Type().IsRegular():
			k = kindFile
		}
		skip, err := t.visit(rel, k, func() (opened, error) {
			f, err := root.Open(rel)
			if err != nil {
				return opened{}, err
			}
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return opened{}, err
			}
			if !fi.Mode().IsRegular() { // replaced since it was listed
				f.Close()
				return opened{}, fmt.Errorf("not a regular file any more")
			}
			return opened{r: f, size: fi.Size(), mod: fi.ModTime()}, nil
		})
		if err != nil {
			return err
		}
		if skip {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return Tree{}, time.Time{}, fmt.Errorf("read policy folder %s: %w", filepath.Clean(dir), err)
	}
	return t.done(), t.newest.UTC(), nil
}

// hash is a content hash of the tree: the sorted names with the SHA-256 of
// each policy file, then the problems. Ignored files and modification times
// do not count.
func (t Tree) hash() string {
	h := sha256.New()
	var n [8]byte
	str := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		io.WriteString(h, s)
	}
	for _, f := range t.Files {
		str(f.Name)
		sum := sha256.Sum256(f.Data)
		h.Write(sum[:])
	}
	for _, p := range t.Problems {
		str(p.String())
	}
	return hex.EncodeToString(h.Sum(nil))
}
