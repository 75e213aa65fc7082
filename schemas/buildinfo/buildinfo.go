// Package buildinfo says which build a program is: its version, the commit
// it was built from, and the Go version. It is the one place that knows:
// vigosrv, vigocli and vigo print it (their version commands), the server
// serves it to administrators, and vigocli compares its own with the
// server's, so that CI vets policy with the code the server runs.
//
// The version comes from the linker (the Makefile sets
// -X github.com/vigo-enroll/vigo/schemas/buildinfo.version=$(VERSION)), else
// from the module version that "go install …@<commit or tag>" records
// (v0.0.0-20261129123456-0123456789ab for a commit); the commit from the
// VCS information that "go build" records in a checkout, else from the
// linker (…buildinfo.commit), else from such a pseudo-version.
package buildinfo

import (
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Set by the linker (-X); empty otherwise.
var version, commit string

// Info describes a build. Its JSON form is what the server answers at
// GET /api/v1/version.
type Info struct {
	// Version is the release or module version, such as "v1.2.3",
	// "0123abc-dirty" (git describe) or a Go pseudo-version; "dev" when
	// unknown.
	Version string `json:"version"`
	// Commit is the VCS revision (full or abbreviated hex); "" when
	// unknown.
	Commit string `json:"commit,omitempty"`
	// Modified reports that the work tree had changes at build time.
	Modified bool `json:"modified,omitempty"`
	// Go is the Go version, such as "go1.26.8".
	Go string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Get returns the build information of the running program.
var Get = sync.OnceValue(func() Info {
	bi, _ := debug.ReadBuildInfo()
	return read(bi, version, commit)
})

// pseudoRE matches the commit at the end of a Go pseudo-version
// (vX.Y.Z-yyyymmddhhmmss-abcdefabcdef, possibly with +incompatible).
var pseudoRE = regexp.MustCompile(`\d{14}-([0-9a-f]{12})(\+incompatible)?$`)

// read computes Info from build information and the linker's values.
func read(bi *debug.BuildInfo, ldVersion, ldCommit string) Info {
	i := Info{Version: ldVersion, Commit: ldCommit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if i.Version == "" {
			i.Version = "dev"
		}
		return i
	}
	i.Go = bi.GoVersion
	mod := bi.Main.Version
	if i.Version == "" && mod != "" && mod != "(devel)" {
		i.Version = mod
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value // the checkout's: more precise than the linker's
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	if i.Commit == "" {
		if m := pseudoRE.FindStringSubmatch(mod); m != nil {
			i.Commit = m[1]
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	return i
}

// String formats i on one line: "v1.2.3 (commit 0123456789ab, go1.26.8,
// linux/amd64)".
func (i Info) String() string {
	var parts []string
	if i.Commit != "" {
		c := "commit " + i.Commit
		if i.Modified {
			c += " with local changes"
		}
		parts = append(parts, c)
	}
	parts = append(parts, i.Go)
	if i.Platform != "" {
		parts = append(parts, i.Platform)
	}
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(parts, ", "))
}

// Differs reports whether i and o are different builds, as far as can be
// told: by commit when both know theirs (an abbreviated commit matches its
// full form), else by version ("dev" builds of unknown commits count as
// the same).
func (i Info) Differs(o Info) bool {
	if i.Commit != "" && o.Commit != "" {
		a, b := strings.ToLower(i.Commit), strings.ToLower(o.Commit)
		return !strings.HasPrefix(a, b) && !strings.HasPrefix(b, a)
	}
	return i.Version != o.Version
}

// Ref returns what "go install …@REF" needs to install this build: the
// commit when known, else the version ("" when neither is usable).
func (i Info) Ref() string {
	switch {
	case i.Commit != "":
		return i.Commit
	case i.Version != "dev" && strings.HasPrefix(i.Version, "v"):
		return i.Version
	}
	return ""
}
