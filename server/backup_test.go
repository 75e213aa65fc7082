package server_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// TestBackupRestoreEnvoyChecksInAgain (issue 16, item 5): an envoy
// enrolls, the state is backed up while the server runs, the data folder
// is wiped, the backup is restored into a new folder, and a server on it
// has the same CA, admin token, envoy and policy revision: the envoy
// checks in again with the certificate it had.
func TestBackupRestoreEnvoyChecksInAgain(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	in := servertest.Start(t, servertest.Options{DataDir: data})
	envoyDir := filepath.Join(t.TempDir(), "etc")
	enr, err := agent.Register(ctx, agent.RegisterParams{Server: in.URL, Hostname: "b1.trusted.test", Dir: envoyDir, CAFingerprint: in.CA().Fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	checkin := func() error {
		a, err := agent.New(agent.Config{Dir: envoyDir})
		if err != nil {
			return err
		}
		defer a.Close()
		_, err = a.CheckinOnce(ctx)
		return err
	}
	if err := checkin(); err != nil {
		t.Fatal(err)
	}
	revision := in.PolicyStatus(t).Active.Revision
	cfg := backupConfig(data)

	// Online: the server is running.
	var archive bytes.Buffer
	info, err := server.Backup(ctx, cfg, &archive)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range info.Files {
		names = append(names, f.Name)
	}
	if diff := cmp.Diff([]string{"tls/ca", "tls/ca_key", "tls/response_signing_key", "admin.token.sha256", "admin.token", "vigo.db"}, names); diff != "" {
		t.Errorf("backed up files (-want +got):\n%s", diff)
	}
	fp, admin := in.CA().Fingerprint(), in.AdminToken
	apiAddr, grpcAddr := in.APIAddr().String(), in.GRPCAddr().String()
	in.Stop()
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}

	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := server.Restore(bytes.NewReader(archive.Bytes()), backupConfig(restored), server.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	// Never over an existing state.
	if _, err := server.Restore(bytes.NewReader(archive.Bytes()), backupConfig(restored), server.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("restore over an existing state: %v, want an error saying the file exists", err)
	}
	if fi, err := os.Stat(filepath.Join(restored, "tls", "ca_key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored CA key: %v %v, want mode 0600", fi, err)
	}

	// The same addresses: the envoy's configuration names them.
	in2 := servertest.Start(t, servertest.Options{DataDir: restored, PolicyDir: in.PolicyDir, Config: func(c *server.Config) {
		c.Server.APIListen, c.Server.GRPCListen = apiAddr, grpcAddr
	}})
	if in2.CA().Fingerprint() != fp || in2.AdminToken != admin {
		t.Fatal("the CA or the admin token differs after the restore")
	}
	if got := in2.PolicyStatus(t).Active.Revision; got != revision {
		t.Errorf("active revision after restore %q, want %q", got, revision)
	}
	if e := in2.Envoy(t, enr.File.UUID); e.Status != "active" {
		t.Errorf("restored envoy: %+v", e)
	}
	if err := checkin(); err != nil {
		t.Fatalf("check-in after the restore: %v", err)
	}
	in2.WaitEnvoy(t, enr.File.UUID, func(e apiv1.Envoy) bool { return e.LastSeen != nil })
}

// TestRestoreRefusesDamagedArchive: a byte changed in the archive, or
// something that is not a backup, is refused and nothing is written.
func TestRestoreRefusesDamagedArchive(t *testing.T) {
	data := t.TempDir()
	in := servertest.Start(t, servertest.Options{DataDir: data})
	var archive bytes.Buffer
	if _, err := server.Backup(context.Background(), backupConfig(data), &archive); err != nil {
		t.Fatal(err)
	}
	in.Stop()
	for _, tc := range []struct {
		name    string
		archive []byte
		want    string
	}{
		{name: "not gzip", archive: []byte("hello"), want: "not a Vigo backup"},
		{name: "truncated", archive: archive.Bytes()[:archive.Len()/2], want: "restore"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			_, err := server.Restore(bytes.NewReader(tc.archive), backupConfig(dir), server.RestoreOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "tls")); len(ents) != 0 {
				t.Errorf("files left after a refused restore: %v", ents)
			}
			if _, err := os.Stat(filepath.Join(dir, "vigo.db")); err == nil {
				t.Error("vigo.db written by a refused restore")
			}
		})
	}
}

func backupConfig(data string) *server.Config {
	c := &server.Config{}
	c.Server.DataDir = data
	c.Defaults()
	return c
}
