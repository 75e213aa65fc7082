package policy

import (
	"os"
	"strings"
	"testing"
)

// TestExamplePolicy vets examples/policy: it must load cleanly and its tests
// must pass.
func TestExamplePolicy(t *testing.T) {
	files := examplePolicy(t)
	p, err := Load(files, "example")
	if err != nil {
		t.Fatalf("Load(examples/policy):\n%v", err)
	}
	for _, f := range p.RunTests() {
		t.Errorf("%v", f.Err())
	}
	c := p.Counts()
	if c.Trusted == 0 || c.Approved == 0 || c.Revocations == 0 || c.Tests == 0 {
		t.Errorf("Counts() = %+v, want every kind of entry in the example", c)
	}
}

// TestExampleWorkflow checks that the example CI workflow vets the policy
// with GitHub annotations on pull requests.
func TestExampleWorkflow(t *testing.T) {
	data, err := os.ReadFile("../examples/policy-ci.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pull_request:", "vigocli policy vet --format github", "cmd/vigocli@"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("examples/policy-ci.yml does not contain %q", want)
		}
	}
}
