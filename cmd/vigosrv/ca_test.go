package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigo-enroll/vigo/server/ca"
)

// vigosrvIn runs vigosrv in-process and returns stdout, stderr and the
// exit code run would return.
func vigosrvIn(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(&out, &errOut)
	root.SetArgs(args)
	root.SetOut(&errOut)
	root.SetErr(&errOut)
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		code = 1
		var ec exitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		errOut.WriteString("vigosrv: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), code
}

func TestCACommands(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	config := loopbackConfig(t, filepath.Join(dir, "server.yaml"), data)

	// No CA yet: the command never creates one.
	if _, errOut, code := vigosrvIn(t, "ca", "status", "--config", config); code != 1 || !strings.Contains(errOut, "no CA at") {
		t.Fatalf("status without a CA: exit %d, %s", code, errOut)
	}
	authority, err := ca.LoadOrCreate(ca.Config{Dir: data})
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := vigosrvIn(t, "ca", "status", "--config", config)
	if code != 0 || !strings.Contains(out, "phase: idle") || !strings.Contains(out, authority.Fingerprint()) {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := vigosrvIn(t, "ca", "status", "--config", config, "-o", "yaml"); code != 2 {
		t.Errorf("status -o yaml: exit %d, %s; want 2", code, errOut)
	}
	if _, errOut, code := vigosrvIn(t, "ca", "rotate", "activate", "--config", config); code != 1 || !strings.Contains(errOut, "run `vigosrv ca rotate prepare` first") {
		t.Errorf("activate first: exit %d, %s", code, errOut)
	}
	out, errOut, code = vigosrvIn(t, "ca", "rotate", "prepare", "--config", config)
	if code != 0 || !strings.Contains(out, "prepared: the next CA") || !strings.Contains(out, "back it up") {
		t.Fatalf("prepare: exit %d\n%s%s", code, out, errOut)
	}
	if out, _, code := vigosrvIn(t, "ca", "rotate", "prepare", "--config", config); code != 0 || !strings.Contains(out, "already prepared") {
		t.Errorf("prepare again: exit %d, %s", code, out)
	}
	out, _, code = vigosrvIn(t, "ca", "status", "--config", config, "-o", "json")
	var st caStatusJSON
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("status -o json: exit %d, %v\n%s", code, err, out)
	}
	if st.Phase != "prepared" || st.NotYetTrusting == nil || *st.NotYetTrusting != 0 || len(st.CAs) != 2 || !st.CAs[0].Signing || st.CAs[1].Signing || st.CAs[0].Fingerprint != authority.Fingerprint() {
		t.Errorf("status after prepare: %+v", st)
	}
	if _, errOut, code := vigosrvIn(t, "ca", "rotate", "finish", "--config", config); code != 1 || !strings.Contains(errOut, "run `vigosrv ca rotate activate` first") {
		t.Errorf("finish when prepared: exit %d, %s", code, errOut)
	}
	for _, step := range []string{"activate", "finish"} {
		if out, errOut, code := vigosrvIn(t, "ca", "rotate", step, "--config", config); code != 0 || !strings.HasPrefix(out, map[string]string{"activate": "activated", "finish": "finished"}[step]) {
			t.Fatalf("%s: exit %d\n%s%s", step, code, out, errOut)
		}
	}
	out, _, _ = vigosrvIn(t, "ca", "status", "--config", config, "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Phase != "idle" || len(st.CAs) != 1 || st.CAs[0].Fingerprint == authority.Fingerprint() {
		t.Fatalf("status after finish: %v %+v", err, st)
	}
	// The data folder's CA files hold the new CA.
	c2, err := ca.LoadOrCreate(ca.Config{Dir: data})
	if err != nil || c2.Fingerprint() == authority.Fingerprint() || c2.Fingerprint() != st.CAs[0].Fingerprint {
		t.Errorf("CA files after finish: %v", err)
	}
	if out, _, code := vigosrvIn(t, "ca", "rotate", "rollback", "--config", config); code != 0 || !strings.Contains(out, "nothing to roll back") {
		t.Errorf("rollback after finish: exit %d, %s", code, out)
	}
}
