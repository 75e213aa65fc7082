package gitsync

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestSnapshotFS(t *testing.T) {
	t.Parallel()
	s := newSnapshot(0, 0)
	for name, content := range map[string]string{"a.cue": "a", "sub/b.cue": "b", "sub/deeper/c.cue": "c", "cue.mod/module.cue": "m"} {
		if err := s.add(name, int64(len(content)), strings.NewReader(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := fstest.TestFS(s.fs(time.Unix(1, 0)), "a.cue", "sub/b.cue", "sub/deeper/c.cue", "cue.mod/module.cue"); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotHash(t *testing.T) {
	t.Parallel()
	hash := func(files ...string) string {
		s := newSnapshot(0, 0)
		for i := 0; i < len(files); i += 2 {
			if err := s.add(files[i], int64(len(files[i+1])), strings.NewReader(files[i+1])); err != nil {
				t.Fatal(err)
			}
		}
		return s.hash()
	}
	base := hash("a", "1", "b", "2")
	for name, other := range map[string]string{
		"content": hash("a", "1", "b", "3"),
		"rename":  hash("a", "1", "c", "2"),
		"shift":   hash("a", "1b", "", "2"),
		"removed": hash("a", "1"),
	} {
		if other == base {
			t.Errorf("%s: same hash", name)
		}
	}
	if hash("b", "2", "a", "1") != base {
		t.Error("hash depends on insertion order")
	}
}
