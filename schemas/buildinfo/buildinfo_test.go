package buildinfo

import (
	"runtime/debug"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestRead(t *testing.T) {
	t.Parallel()
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	cases := []struct {
		name       string
		bi         *debug.BuildInfo
		ldVersion  string
		ldCommit   string
		want       Info
		wantString string
	}{
		{
			name:      "make in a checkout",
			bi:        &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("0123456789abcdef0123456789abcdef01234567", "true")},
			ldVersion: "0123456-dirty", ldCommit: "ffff",
			want:       Info{Version: "0123456-dirty", Commit: "0123456789abcdef0123456789abcdef01234567", Modified: true, Go: "go1.26.8"},
			wantString: "0123456-dirty (commit 0123456789abcdef0123456789abcdef01234567 with local changes, go1.26.8)",
		},
		{
			name:       "go install at a commit",
			bi:         &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261129123456-0123456789ab"}},
			want:       Info{Version: "v0.0.0-20261129123456-0123456789ab", Commit: "0123456789ab", Go: "go1.26.8"},
			wantString: "v0.0.0-20261129123456-0123456789ab (commit 0123456789ab, go1.26.8)",
		},
		{
			name:       "go install at a tag",
			bi:         &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			want:       Info{Version: "v1.2.3", Go: "go1.26.8"},
			wantString: "v1.2.3 (go1.26.8)",
		},
		{
			name:     "linker commit without VCS information",
			bi:       &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			ldCommit: "abcdef0",
			want:     Info{Version: "dev", Commit: "abcdef0", Go: "go1.26.8"},
		},
		{
			name: "go test",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			want: Info{Version: "dev", Go: "go1.26.8"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := read(c.bi, c.ldVersion, c.ldCommit)
			if d := cmp.Diff(c.want, got, cmpopts.IgnoreFields(Info{}, "Platform")); d != "" {
				t.Errorf("read (-want +got):\n%s", d)
			}
			got.Platform = ""
			if c.wantString != "" && got.String() != c.wantString {
				t.Errorf("String() = %q, want %q", got.String(), c.wantString)
			}
		})
	}
}

func TestDiffers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		a, b Info
		want bool
	}{
		{"same commit, abbreviated", Info{Version: "v0.0.0-20261129123456-0123456789ab", Commit: "0123456789ab"}, Info{Version: "0123456", Commit: "0123456789abcdef0123456789abcdef01234567"}, false},
		{"other commit", Info{Commit: "0123456789ab"}, Info{Commit: "ffff456789abcdef"}, true},
		{"same tag", Info{Version: "v1.2.3"}, Info{Version: "v1.2.3", Commit: "0123"}, false},
		{"other tag", Info{Version: "v1.2.3"}, Info{Version: "v1.2.4"}, true},
		{"dev builds", Info{Version: "dev"}, Info{Version: "dev"}, false},
		{"dev and a release", Info{Version: "dev"}, Info{Version: "v1.2.3"}, true},
	}
	for _, c := range cases {
		if got := c.a.Differs(c.b); got != c.want {
			t.Errorf("%s: Differs = %v, want %v", c.name, got, c.want)
		}
		if got := c.b.Differs(c.a); got != c.want {
			t.Errorf("%s (reversed): Differs = %v, want %v", c.name, got, c.want)
		}
	}
}
