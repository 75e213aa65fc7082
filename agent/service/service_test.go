package service

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// recorder is a Runner that records commands and fails those listed in fail.
type recorder struct {
	cmds []string
	fail map[string][]byte
}

func (r *recorder) run(_ context.Context, name string, args ...string) ([]byte, error) {
	line := name + " " + quoteArgs(args)
	r.cmds = append(r.cmds, line)
	if out, ok := r.fail[line]; ok {
		return out, errors.New("exit status 1")
	}
	return nil, nil
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \"") {
			a = fmt.Sprintf("%q", a)
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func paramsFor(goos string) Params {
	if goos == "windows" {
		return Params{BinaryPath: `C:\Program Files\vigo-envoy\vigo.exe`, ConfigDir: `C:\ProgramData\vigo-envoy`}
	}
	return Params{BinaryPath: "/usr/local/bin/vigo", ConfigDir: "/etc/vigo-envoy"}
}

// TestGolden renders every flavour and runs Install, Start, Stop and
// Uninstall with a recording runner; the files and the command sequence are
// compared with testdata/<goos>.txtar (refresh with -update).
func TestGolden(t *testing.T) {
	for _, goos := range []string{"linux", "darwin", "freebsd", "netbsd", "openbsd", "illumos", "windows"} {
		t.Run(goos, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rec := &recorder{}
			p := paramsFor(goos)
			p.Root = t.TempDir()
			p.Runner = rec.run

			files, err := Render(goos, p)
			if err != nil {
				t.Fatal(err)
			}
			ar := &txtar.Archive{Comment: []byte("Files and commands of the " + goos + " service flavour (go test -update refreshes).\n")}
			for _, f := range files {
				ar.Files = append(ar.Files, txtar.File{Name: fmt.Sprintf("%s (mode %04o)", f.Path, f.Mode), Data: f.Data})
			}

			var cmds bytes.Buffer
			for _, op := range []struct {
				name string
				fn   func(context.Context, string, Params) error
			}{{"install", Install}, {"start", Start}, {"stop", Stop}, {"uninstall", Uninstall}} {
				rec.cmds = nil
				if err := op.fn(ctx, goos, p); err != nil {
					t.Fatalf("%s: %v", op.name, err)
				}
				fmt.Fprintf(&cmds, "%s:\n", op.name)
				for _, c := range rec.cmds {
					fmt.Fprintf(&cmds, "\t%s\n", c)
				}
				switch op.name {
				case "install":
					for _, f := range files {
						got, err := os.ReadFile(filepath.Join(p.Root, f.Path))
						if err != nil {
							t.Fatalf("after install: %v", err)
						}
						if !bytes.Equal(got, f.Data) {
							t.Errorf("after install: %s differs from the rendered file", f.Path)
						}
						st, _ := os.Stat(filepath.Join(p.Root, f.Path))
						if st.Mode().Perm() != f.Mode {
							t.Errorf("after install: %s mode %v, want %v", f.Path, st.Mode().Perm(), f.Mode)
						}
					}
				case "uninstall":
					for _, f := range files {
						if _, err := os.Stat(filepath.Join(p.Root, f.Path)); !errors.Is(err, fs.ErrNotExist) {
							t.Errorf("after uninstall: %s still exists (%v)", f.Path, err)
						}
					}
				}
			}
			ar.Files = append(ar.Files, txtar.File{Name: "commands", Data: cmds.Bytes()})
			got := txtar.Format(ar)

			golden := filepath.Join("testdata", goos+".txtar")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", golden, diff)
			}
		})
	}
}

func TestRenderRejectsUnsafeParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		goos string
		p    Params
	}{
		{"empty", "linux", Params{}},
		{"relative", "linux", Params{BinaryPath: "vigo", ConfigDir: "/etc/vigo-envoy"}},
		{"space on unix", "linux", Params{BinaryPath: "/opt/my vigo/vigo", ConfigDir: "/etc/vigo-envoy"}},
		{"newline", "linux", Params{BinaryPath: "/usr/bin/vigo\nExecStartPre=/bin/evil", ConfigDir: "/etc/vigo-envoy"}},
		{"quote", "darwin", Params{BinaryPath: "/usr/bin/vigo", ConfigDir: `/etc/"x`}},
		{"xml", "illumos", Params{BinaryPath: "/usr/bin/vigo", ConfigDir: "/etc/<x>"}},
		{"dollar", "freebsd", Params{BinaryPath: "/usr/bin/$(reboot)", ConfigDir: "/etc/vigo-envoy"}},
		{"percent specifier", "linux", Params{BinaryPath: "/usr/bin/%h", ConfigDir: "/etc/vigo-envoy"}},
		{"dotdot", "linux", Params{BinaryPath: "/usr/../bin/vigo", ConfigDir: "/etc/vigo-envoy"}},
		{"trailing slash", "openbsd", Params{BinaryPath: "/usr/bin/vigo", ConfigDir: "/etc/vigo-envoy/"}},
		{"windows unix path", "windows", Params{BinaryPath: "/usr/bin/vigo", ConfigDir: `C:\ProgramData\vigo-envoy`}},
		{"windows quote", "windows", Params{BinaryPath: `C:\x"\vigo.exe`, ConfigDir: `C:\ProgramData\vigo-envoy`}},
		{"windows trailing backslash", "windows", Params{BinaryPath: `C:\vigo\vigo.exe`, ConfigDir: `C:\ProgramData\vigo-envoy\`}},
		{"unsupported os", "plan9", paramsFor("linux")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Render(tt.goos, tt.p); err == nil {
				t.Fatal("Render accepted unsafe params")
			}
			rec := &recorder{}
			tt.p.Runner, tt.p.Root = rec.run, t.TempDir()
			if err := Install(context.Background(), tt.goos, tt.p); err == nil {
				t.Fatal("Install accepted unsafe params")
			}
			if len(rec.cmds) != 0 {
				t.Errorf("Install ran commands for unsafe params: %q", rec.cmds)
			}
		})
	}
}

func TestUnsupported(t *testing.T) {
	t.Parallel()
	_, err := Render("plan9", paramsFor("linux"))
	if !errors.Is(err, ErrUnsupported) {
		t.Fatalf("got %v, want ErrUnsupported", err)
	}
}

func TestInstallErrorNamesCommandAndOutput(t *testing.T) {
	t.Parallel()
	rec := &recorder{fail: map[string][]byte{"systemctl enable vigo-envoy.service": []byte("Failed to enable unit: Access denied\n")}}
	p := paramsFor("linux")
	p.Root, p.Runner = t.TempDir(), rec.run
	err := Install(context.Background(), "linux", p)
	if err == nil {
		t.Fatal("Install succeeded, want error")
	}
	want := "install service: systemctl enable vigo-envoy.service: exit status 1: Failed to enable unit: Access denied"
	if err.Error() != want {
		t.Errorf("error\n got %q\nwant %q", err, want)
	}
}

func TestWindowsInstallUpdatesExistingService(t *testing.T) {
	t.Parallel()
	p := paramsFor("windows")
	rec := &recorder{fail: map[string][]byte{}}
	create := `sc.exe create vigo-envoy binPath= "\"C:\\Program Files\\vigo-envoy\\vigo.exe\" run --config-dir \"C:\\ProgramData\\vigo-envoy\"" start= auto DisplayName= "Vigo Envoy"`
	rec.fail[create] = []byte("[SC] CreateService FAILED 1073:\r\n\r\nThe specified service already exists.\r\n")
	p.Runner = rec.run
	if err := Install(context.Background(), "windows", p); err != nil {
		t.Fatal(err)
	}
	if len(rec.cmds) < 2 || !strings.HasPrefix(rec.cmds[1], "sc.exe config vigo-envoy binPath= ") {
		t.Errorf("after a 1073 failure, want sc.exe config; commands: %q", rec.cmds)
	}
}

func TestDarwinStartFallsBackToKickstart(t *testing.T) {
	t.Parallel()
	p := paramsFor("darwin")
	rec := &recorder{fail: map[string][]byte{"launchctl bootstrap system /Library/LaunchDaemons/com.vigo.envoy.plist": []byte("Bootstrap failed: 5: Input/output error")}}
	p.Runner = rec.run
	if err := Start(context.Background(), "darwin", p); err != nil {
		t.Fatal(err)
	}
	want := []string{"launchctl bootstrap system /Library/LaunchDaemons/com.vigo.envoy.plist", "launchctl kickstart -k system/com.vigo.envoy"}
	if diff := cmp.Diff(want, rec.cmds); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
}

// TestSystemdAnalyzeVerify checks the unit with systemd's own parser.
func TestSystemdAnalyzeVerify(t *testing.T) {
	t.Parallel()
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed; the unit is still golden-tested")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "vigo")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := Render("linux", Params{BinaryPath: bin, ConfigDir: filepath.Join(dir, "etc")})
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, filepath.Base(files[0].Path))
	if err := os.WriteFile(unit, files[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "verify", unit).CombinedOutput()
	// Without a running systemd, verify may print notes about the host
	// (missing /proc entries, unknown targets); only lines about our unit count.
	var problems []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, filepath.Base(unit)) {
			problems = append(problems, line)
		}
	}
	if err != nil || len(problems) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
