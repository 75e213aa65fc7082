package agentpb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// protocVersion matches the lines that name the protoc version, which may
// differ between machines without changing the generated code.
var protocVersion = regexp.MustCompile(`(?m)^//.*protoc +v[0-9.]+$`)

func lookTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		for _, dir := range filepath.SplitList(string(bytes.TrimSpace(out))) {
			p := filepath.Join(dir, "bin", name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

// TestGeneratedCodeIsCurrent regenerates the Go code from agent.proto into a
// temporary folder and compares it with the committed files.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	protoc := lookTool(t, "protoc")
	if protoc == "" {
		t.Skip("protoc not installed (apt-get install protobuf-compiler): cannot check that the generated code is current")
	}
	genGo, genGRPC := lookTool(t, "protoc-gen-go"), lookTool(t, "protoc-gen-go-grpc")
	if genGo == "" || genGRPC == "" {
		t.Fatal("protoc is installed but protoc-gen-go or protoc-gen-go-grpc is not: see the go install lines in gen.go")
	}
	out := t.TempDir()
	cmd := exec.Command(protoc, "--proto_path=.",
		"--plugin=protoc-gen-go="+genGo, "--plugin=protoc-gen-go-grpc="+genGRPC,
		"--go_out="+out, "--go_opt=paths=source_relative",
		"--go-grpc_out="+out, "--go-grpc_opt=paths=source_relative",
		"agent.proto")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	for _, name := range []string{"agent.pb.go", "agent_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		want = protocVersion.ReplaceAll(want, nil)
		got = protocVersion.ReplaceAll(got, nil)
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("%s is stale: run `make proto` (plugins: see gen.go) (-regenerated +committed):\n%s", name, diff)
		}
	}
}
