package server_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestIssue12Item6DatabaseFilesPrivate: the SQLite files (vigo.db, -wal,
// -shm) are 0600 and the data folder 0700 even when the folder already
// existed with the usual 0755 (made by a package, by `make run`'s
// mkdir -p vigo-data/dist, by an operator), and a database left 0644 by an
// older version is made private at the next start (security review L5).
func TestIssue12Item6DatabaseFilesPrivate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permission bits")
	}
	data := filepath.Join(t.TempDir(), "vigo-data")
	if err := os.MkdirAll(filepath.Join(data, "dist"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if got := perm(t, data); got != 0o700 {
			t.Errorf("%s: data folder mode %v, want 0700", when, got)
		}
		for _, name := range []string{"vigo.db", "vigo.db-wal", "vigo.db-shm"} {
			if got := perm(t, filepath.Join(data, name)); got != 0o600 {
				t.Errorf("%s: %s mode %v, want 0600", when, name, got)
			}
		}
	}
	in := servertest.Start(t, servertest.Options{DataDir: data})
	if c, b := in.Register(t, servertest.NewIdentity(t, "files.trusted.test").Req); c != 200 {
		t.Fatalf("register: %d %s", c, b)
	}
	check("first start")
	in.Stop()

	// Files left world-readable by an older version.
	for _, name := range []string{"vigo.db", "vigo.db-wal", "vigo.db-shm"} {
		if err := os.Chmod(filepath.Join(data, name), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	in2 := servertest.Start(t, servertest.Options{DataDir: data})
	if c, b := in2.Do(t, "GET", "/api/v1/envoys/files.trusted.test", nil, true); c != 200 {
		t.Fatalf("envoy after restart: %d %s", c, b)
	}
	check("restart")
}

// TestIssue12Item6DataFolderWritableByOthersRefused: a data folder that
// other users can write to is not tightened but refused, with a message
// that says what to do: it may be a shared folder such as /tmp, whose
// mode must not change, and files in it may already have been planted.
func TestIssue12Item6DataFolderWritableByOthersRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Unix permission bits")
	}
	for _, mode := range []os.FileMode{0o777, 0o770, 0o1777} {
		data := filepath.Join(t.TempDir(), "data")
		if err := os.Mkdir(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(data, mode); err != nil {
			t.Fatal(err)
		}
		cfg := &server.Config{}
		cfg.Server.APIListen, cfg.Server.GRPCListen, cfg.Server.Hostname = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"
		cfg.Server.DataDir = data
		cfg.Policy.Dir = t.TempDir()
		cfg.Defaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		s, err := server.New(t.Context(), cfg, nil)
		if err == nil {
			s.Close()
			t.Fatalf("mode %v: the server started in a data folder others can write to", mode)
		}
		if !strings.Contains(err.Error(), "writable by other users") || !strings.Contains(err.Error(), data) {
			t.Errorf("mode %v: error %q does not say what is wrong", mode, err)
		}
		fi, _ := os.Stat(data)
		if fi.Mode()&(os.ModePerm|os.ModeSticky) != mode&(os.ModePerm|os.ModeSticky) {
			t.Errorf("mode %v: the refused folder was changed to %v", mode, fi.Mode())
		}
		if entries, _ := os.ReadDir(data); len(entries) != 0 {
			t.Errorf("mode %v: files written before the refusal: %v", mode, entries)
		}
	}
}
