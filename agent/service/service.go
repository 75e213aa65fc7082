// Package service installs, removes, starts and stops the vigo-envoy agent
// as a system service on every platform the agent is built for.
//
// Render produces the files a platform needs (systemd unit, launchd
// property list, rc.d script, SMF manifest); Install writes them and runs the
// platform's tools (systemctl, launchctl, service/rcctl, svccfg/svcadm,
// sc.exe) through an injectable Runner, so the whole sequence is testable on
// any host. The operating system is a parameter, never the build target:
// every flavour can be rendered and tested from Linux.
//
// Files and commands per platform:
//
//	linux    /etc/systemd/system/vigo-envoy.service          systemctl daemon-reload|enable|restart|stop|disable
//	darwin   /Library/LaunchDaemons/com.vigo.envoy.plist      launchctl bootstrap|kickstart|bootout system/com.vigo.envoy
//	freebsd  /usr/local/etc/rc.d/vigo_envoy, /etc/rc.conf.d/vigo_envoy   service vigo_envoy restart|stop (daemon(8) supervises)
//	netbsd   /etc/rc.d/vigo_envoy, /etc/rc.conf.d/vigo_envoy             service vigo_envoy restart|stop
//	openbsd  /etc/rc.d/vigo_envoy                             rcctl enable|restart|stop|disable vigo_envoy
//	illumos  /var/svc/manifest/site/vigo-envoy.xml            svccfg import|delete, svcadm enable|disable svc:/system/vigo-envoy:default
//	windows  (no file)                                        sc.exe create|config|description|failure|failureflag|start|stop|delete vigo-envoy
//
// NetBSD's rc only runs scripts from /etc/rc.d, so the NetBSD flavour lives
// there rather than in /usr/local/etc/rc.d (which only FreeBSD reads).
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vigo-enroll/vigo/schemas/atomicfile"
)

// Names of the service on each platform.
const (
	// Name is the service name for systemd, Windows and SMF.
	Name = "vigo-envoy"
	// RCName is the rc.d name on the BSDs (rc.d names cannot hold a dash).
	RCName = "vigo_envoy"
	// LaunchdLabel is the launchd label on macOS.
	LaunchdLabel = "com.vigo.envoy"
	// SMFService is the SMF service FMRI on illumos, without instance.
	SMFService = "svc:/system/vigo-envoy"
	// SMFInstance is the SMF instance FMRI on illumos.
	SMFInstance = SMFService + ":default"
)

// ErrUnsupported is returned for an operating system without a service flavour.
var ErrUnsupported = errors.New("unsupported operating system")

// Runner runs one command and returns its combined output. The default runs
// the command with os/exec.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// Params describe the service to install. Zero values of the optional
// fields are sensible defaults.
type Params struct {
	// BinaryPath is the absolute path of the vigo binary (required).
	BinaryPath string
	// ConfigDir is the absolute path of the envoy's configuration folder
	// (required); the service runs "vigo run --config-dir ConfigDir".
	ConfigDir string
	// Root is prepended to every written or removed file: "" means "/".
	// Used by tests and image builds.
	Root string
	// Runner runs the platform's tools; nil runs them for real.
	Runner Runner
}

// File is one file a platform's service needs.
type File struct {
	// Path is the absolute path on the target system.
	Path string
	// Mode is the file's permission bits.
	Mode fs.FileMode
	// Data is the file's content.
	Data []byte
}

// unixPath is the character set accepted in Unix paths: every flavour
// (systemd, rc.d shell, launchd/SMF XML) can carry it without quoting.
var unixPath = regexp.MustCompile(`^/[A-Za-z0-9._/+@-]*$`)

// windowsPath accepts drive-absolute paths such as C:\Program Files (x86)\vigo\vigo.exe.
var windowsPath = regexp.MustCompile(`^[A-Za-z]:\\[A-Za-z0-9 ._\\()+@-]*$`)

func (p Params) validate(goos string) error {
	for _, f := range []struct{ name, v string }{{"binary path", p.BinaryPath}, {"config dir", p.ConfigDir}} {
		if f.v == "" {
			return fmt.Errorf("validate service params: %s is empty", f.name)
		}
		re := unixPath
		if goos == "windows" {
			re = windowsPath
		}
		if !re.MatchString(f.v) {
			return fmt.Errorf("validate service params: %s %q must be absolute and use only letters, digits and . _ / + @ - (and space ( ) \\ on Windows)", f.name, f.v)
		}
		if strings.HasSuffix(f.v, "/") || strings.HasSuffix(f.v, `\`) {
			return fmt.Errorf("validate service params: %s %q ends with a separator", f.name, f.v)
		}
		for _, part := range strings.FieldsFunc(f.v, func(r rune) bool { return r == '/' || r == '\\' }) {
			if part == ".." || part == "." {
				return fmt.Errorf("validate service params: %s %q is not clean", f.name, f.v)
			}
		}
	}
	return nil
}

// Render returns the files the service needs on goos. Windows needs none.
func Render(goos string, p Params) ([]File, error) {
	if err := p.validate(goos); err != nil {
		return nil, err
	}
	switch goos {
	case "linux":
		return []File{{Path: "/etc/systemd/system/" + Name + ".service", Mode: 0o644, Data: systemdUnit(p)}}, nil
	case "darwin":
		return []File{{Path: "/Library/LaunchDaemons/" + LaunchdLabel + ".plist", Mode: 0o644, Data: launchdPlist(p)}}, nil
	case "freebsd":
		return []File{
			{Path: "/usr/local/etc/rc.d/" + RCName, Mode: 0o755, Data: freebsdRC(p)},
			{Path: "/etc/rc.conf.d/" + RCName, Mode: 0o644, Data: []byte(RCName + "_enable=\"YES\"\n")},
		}, nil
	case "netbsd":
		return []File{
			{Path: "/etc/rc.d/" + RCName, Mode: 0o555, Data: netbsdRC(p)},
			{Path: "/etc/rc.conf.d/" + RCName, Mode: 0o644, Data: []byte(RCName + "=YES\n")},
		}, nil
	case "openbsd":
		return []File{{Path: "/etc/rc.d/" + RCName, Mode: 0o555, Data: openbsdRC(p)}}, nil
	case "illumos":
		return []File{{Path: "/var/svc/manifest/site/" + Name + ".xml", Mode: 0o444, Data: smfManifest(p)}}, nil
	case "windows":
		return nil, nil
	}
	return nil, fmt.Errorf("render service for %q: %w", goos, ErrUnsupported)
}

// Install writes the service's files and registers the service so that it
// starts at boot. It does not start it: call Start.
func Install(ctx context.Context, goos string, p Params) error {
	files, err := Render(goos, p)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := writeFile(p.root(f.Path), f.Data, f.Mode); err != nil {
			return fmt.Errorf("install service: %w", err)
		}
	}
	r := p.runner()
	var steps [][]string
	switch goos {
	case "linux":
		steps = [][]string{{"systemctl", "daemon-reload"}, {"systemctl", "enable", Name + ".service"}}
	case "darwin":
		steps = [][]string{{"launchctl", "enable", "system/" + LaunchdLabel}}
	case "freebsd", "netbsd":
		// Enabled by the rc.conf.d file written above.
	case "openbsd":
		steps = [][]string{{"rcctl", "enable", RCName}}
	case "illumos":
		steps = [][]string{{"svccfg", "validate", files[0].Path}, {"svccfg", "import", files[0].Path}}
	case "windows":
		bin := windowsCommandLine(p)
		create := []string{"sc.exe", "create", Name, "binPath=", bin, "start=", "auto", "DisplayName=", "Vigo Envoy"}
		if out, err := r(ctx, create[0], create[1:]...); err != nil {
			// 1073: the service already exists; update it in place.
			if !bytes.Contains(out, []byte("1073")) {
				return cmdError("install service", create, out, err)
			}
			steps = append(steps, []string{"sc.exe", "config", Name, "binPath=", bin, "start=", "auto", "DisplayName=", "Vigo Envoy"})
		}
		steps = append(steps,
			[]string{"sc.exe", "description", Name, "Vigo Envoy agent: enrollment and check-in with the Vigo server"},
			// Restart after 5 s, 10 s, then every 60 s; reset the failure count after a day.
			[]string{"sc.exe", "failure", Name, "reset=", "86400", "actions=", "restart/5000/restart/10000/restart/60000"},
			// Also count a non-zero exit as a failure, not only a crash.
			[]string{"sc.exe", "failureflag", Name, "1"},
		)
	}
	return runAll(ctx, r, "install service", steps)
}

// Uninstall stops the service, unregisters it and removes its files. A
// service that is not installed is not an error.
func Uninstall(ctx context.Context, goos string, p Params) error {
	files, err := Render(goos, p)
	if err != nil {
		return err
	}
	r := p.runner()
	var best, steps [][]string // best: errors ignored (not installed, not running)
	switch goos {
	case "linux":
		best = [][]string{{"systemctl", "disable", "--now", Name + ".service"}}
		steps = [][]string{{"systemctl", "daemon-reload"}}
	case "darwin":
		best = [][]string{{"launchctl", "bootout", "system/" + LaunchdLabel}, {"launchctl", "disable", "system/" + LaunchdLabel}}
	case "freebsd", "netbsd":
		best = [][]string{{"service", RCName, "onestop"}}
	case "openbsd":
		best = [][]string{{"rcctl", "stop", RCName}, {"rcctl", "disable", RCName}}
	case "illumos":
		best = [][]string{{"svcadm", "disable", "-s", SMFInstance}, {"svccfg", "delete", "-f", SMFService}}
	case "windows":
		best = [][]string{{"sc.exe", "stop", Name}, {"sc.exe", "delete", Name}}
	}
	for _, s := range best {
		_, _ = r(ctx, s[0], s[1:]...)
	}
	for _, f := range files {
		if err := os.Remove(p.root(f.Path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("uninstall service: %w", err)
		}
	}
	return runAll(ctx, r, "uninstall service", steps)
}

// Start starts the installed service, restarting it when it already runs.
func Start(ctx context.Context, goos string, p Params) error {
	files, err := Render(goos, p)
	if err != nil {
		return err
	}
	r := p.runner()
	switch goos {
	case "linux":
		return runAll(ctx, r, "start service", [][]string{{"systemctl", "restart", Name + ".service"}})
	case "darwin":
		// bootstrap loads and starts it (RunAtLoad); when it is already
		// loaded, bootstrap fails and kickstart -k restarts it.
		if _, err := r(ctx, "launchctl", "bootstrap", "system", files[0].Path); err == nil {
			return nil
		}
		return runAll(ctx, r, "start service", [][]string{{"launchctl", "kickstart", "-k", "system/" + LaunchdLabel}})
	case "freebsd", "netbsd":
		return runAll(ctx, r, "start service", [][]string{{"service", RCName, "restart"}})
	case "openbsd":
		return runAll(ctx, r, "start service", [][]string{{"rcctl", "restart", RCName}})
	case "illumos":
		return runAll(ctx, r, "start service", [][]string{{"svcadm", "enable", "-s", SMFInstance}})
	case "windows":
		return runAll(ctx, r, "start service", [][]string{{"sc.exe", "start", Name}})
	}
	return fmt.Errorf("start service on %q: %w", goos, ErrUnsupported)
}

// Stop stops the service; it stays installed and starts again at boot.
func Stop(ctx context.Context, goos string, p Params) error {
	if _, err := Render(goos, p); err != nil {
		return err
	}
	var step []string
	switch goos {
	case "linux":
		step = []string{"systemctl", "stop", Name + ".service"}
	case "darwin":
		step = []string{"launchctl", "bootout", "system/" + LaunchdLabel}
	case "freebsd", "netbsd":
		step = []string{"service", RCName, "stop"}
	case "openbsd":
		step = []string{"rcctl", "stop", RCName}
	case "illumos":
		step = []string{"svcadm", "disable", "-s", SMFInstance}
	case "windows":
		step = []string{"sc.exe", "stop", Name}
	}
	return runAll(ctx, p.runner(), "stop service", [][]string{step})
}

func (p Params) root(path string) string {
	if p.Root == "" {
		return filepath.FromSlash(path)
	}
	return filepath.Join(p.Root, filepath.FromSlash(path))
}

func (p Params) runner() Runner {
	if p.Runner != nil {
		return p.Runner
	}
	return execRunner
}

func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

func runAll(ctx context.Context, r Runner, op string, steps [][]string) error {
	for _, s := range steps {
		if out, err := r(ctx, s[0], s[1:]...); err != nil {
			return cmdError(op, s, out, err)
		}
	}
	return nil
}

func cmdError(op string, cmd []string, out []byte, err error) error {
	msg := strings.TrimSpace(string(out))
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	if msg != "" {
		return fmt.Errorf("%s: %s: %w: %s", op, strings.Join(cmd, " "), err, msg)
	}
	return fmt.Errorf("%s: %s: %w", op, strings.Join(cmd, " "), err)
}

// writeFile creates path's folder like a system folder (0755) and writes
// the file atomically.
func writeFile(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	return atomicfile.Write(path, data, mode)
}
