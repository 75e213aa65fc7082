package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigo-enroll/vigo/gitsync/gitsynctest"
	"github.com/vigo-enroll/vigo/schemas/apiv1"
	"github.com/vigo-enroll/vigo/server/servertest"
)

// The CI examples are run here, step by step, with bash: the shell of
// their steps against a real server following a real Git repository. What
// only GitHub or GitLab can do (check out, set up Go, post a comment) is
// done by the test or by a stand-in for the gh CLI that keeps the comments
// of a pull request in a JSON file, so that the workflow's own jq
// expression and marker logic are what is tested.

type ghWorkflow struct {
	On   map[string]yaml.Node `yaml:"on"`
	Env  map[string]string    `yaml:"env"`
	Jobs map[string]ghJob     `yaml:"jobs"`
}

type ghJob struct {
	If    string            `yaml:"if"`
	Env   map[string]string `yaml:"env"`
	Steps []ghStep          `yaml:"steps"`
}

type ghStep struct {
	Name string            `yaml:"name"`
	ID   string            `yaml:"id"`
	If   string            `yaml:"if"`
	Uses string            `yaml:"uses"`
	With map[string]any    `yaml:"with"`
	Env  map[string]string `yaml:"env"`
	Run  string            `yaml:"run"`
}

// ciEnv is what the CI steps run with: the repository checkout, the
// server, the tools.
type ciEnv struct {
	t       *testing.T
	repo    *gitsynctest.Repo
	in      *servertest.Instance
	token   string // a read-only admin token
	caPEM   string
	gopath  string // where the install step puts vigocli
	base    []string
	ghState string // the comments of the pull request (fake gh)
}

// newCIEnv starts a server following a repository that holds
// examples/policy at its top, registers an approved host and refuses one
// under *.stage.example.com, and makes a read-only admin token for CI.
func newCIEnv(t *testing.T) *ciEnv {
	t.Helper()
	for _, tool := range []string{"bash", "git", "jq", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	e := &ciEnv{t: t, repo: gitsynctest.NewRepo(t)}
	files := exampleFiles(t)
	files["README.md"] = "The enrollment policy.\n"
	e.repo.Commit(files, "the example policy")
	e.repo.Push()
	e.in = gitPolicyServer(t, e.repo, "", time.Hour)
	for host, want := range map[string]int{"shop.web.example.com": 200, "x.stage.example.com": 403} {
		if code, body := e.in.Register(t, servertest.NewIdentity(t, host).Req); code != want {
			t.Fatalf("register %s: HTTP %d %s", host, code, body)
		}
	}
	code, body := e.in.Do(t, "POST", "/api/v1/admin-tokens", apiv1.AdminTokenCreateRequest{Name: "ci", Role: "read-only"}, true)
	var tok apiv1.AdminTokenCreated
	if code != 201 || json.Unmarshal(body, &tok) != nil {
		t.Fatalf("create a read-only token: HTTP %d %s", code, body)
	}
	e.token = tok.Token
	ca, err := os.ReadFile(filepath.Join(e.in.DataDir, "tls", "ca"))
	if err != nil {
		t.Fatal(err)
	}
	e.caPEM = string(ca)
	e.base = e.installEnv()
	e.ghState = filepath.Join(t.TempDir(), "comments.json")
	// A comment of somebody else, which must stay as it is.
	if err := os.WriteFile(e.ghState, []byte(`[{"id": 1, "body": "LGTM"}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// installEnv is the environment that lets the install step's
// "go install github.com/vigo-enroll/vigo/cmd/vigocli@REF" work offline:
// the module comes from this checkout (git insteadOf), its dependencies
// from the local module cache; the binary goes to a GOPATH of the test.
// When the checkout has changes not committed, the working tree's vigocli
// replaces the installed one afterwards (see fixInstall).
func (e *ciEnv) installEnv() []string {
	t := e.t
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a Git checkout of Vigo Enroll: cannot install vigocli as the workflow does: %v", err)
	}
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gitconfig := filepath.Join(dir, "gitconfig")
	cfg := fmt.Sprintf("[url \"file://%s\"]\n\tinsteadOf = https://github.com/vigo-enroll/vigo\n[protocol \"file\"]\n\tallow = always\n[safe]\n\tdirectory = *\n",
		strings.TrimSpace(string(top)))
	if err := os.WriteFile(gitconfig, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.gopath = filepath.Join(dir, "gopath")
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VIGO_") || strings.HasPrefix(k, "GITHUB_") || strings.HasPrefix(k, "CI_") || k == "GOFLAGS" || k == "GOPATH" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"GIT_CONFIG_GLOBAL="+gitconfig, "GIT_CONFIG_NOSYSTEM=1",
		"GOPATH="+e.gopath, "GOMODCACHE="+strings.TrimSpace(string(modcache)),
		"GOPRIVATE=github.com/vigo-enroll/vigo", "GOPROXY=off", "GOSUMDB=off", "GOFLAGS=",
	)
}

// ref is the commit the install step installs: this checkout's HEAD.
func ref(t *testing.T) string {
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// fixInstall replaces the vigocli that the install step installed (HEAD)
// by the working tree's when the working tree has changes: the workflow is
// then tested with the code under test.
func (e *ciEnv) fixInstall() {
	out, err := exec.Command("git", "status", "--porcelain", "--", "../..").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return
	}
	e.t.Log("the checkout has uncommitted changes: vigocli is built from the working tree after the install step")
	cmd := exec.Command("go", "build", "-o", filepath.Join(e.gopath, "bin", "vigocli"), ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("build vigocli: %v\n%s", err, b)
	}
}

// fakeGH writes a stand-in for "gh api" on the comments in e.ghState and
// returns its folder.
func (e *ciEnv) fakeGH() string {
	dir := e.t.TempDir()
	script := `#!/usr/bin/env bash
# A stand-in for "gh api" on the comments of one pull request, kept in $FAKE_GH_STATE.
set -euo pipefail
[ "$1" = api ] || { echo "fake gh: only api" >&2; exit 2; }
shift
method=GET path= jq_expr= body=
while [ $# -gt 0 ]; do
	case "$1" in
	-X) method=$2; shift 2 ;;
	--paginate) shift ;;
	--jq) jq_expr=$2; shift 2 ;;
	-F) case "$2" in body=@*) body=$(cat "${2#body=@}") ;; *) echo "fake gh: field $2" >&2; exit 2 ;; esac; shift 2 ;;
	-*) echo "fake gh: flag $1" >&2; exit 2 ;;
	*) path=$1; shift ;;
	esac
done
state=$FAKE_GH_STATE
case "$method $path" in
"GET repos/acme/policy/issues/7/comments")
	if [ -n "$jq_expr" ]; then jq -r "$jq_expr" "$state"; else cat "$state"; fi ;;
"POST repos/acme/policy/issues/7/comments")
	id=$(jq '(map(.id) | max // 0) + 1' "$state")
	jq --arg body "$body" --argjson id "$id" '. + [{id: $id, body: $body}]' "$state" > "$state.new"
	mv "$state.new" "$state"
	echo "{\"id\": $id}" ;;
"PATCH repos/acme/policy/issues/comments/"*)
	id=${path##*/}
	jq -e --argjson id "$id" 'any(.id == $id)' "$state" > /dev/null || { echo "fake gh: no comment $id" >&2; exit 1; }
	jq --arg body "$body" --argjson id "$id" 'map(if .id == $id then .body = $body else . end)' "$state" > "$state.new"
	mv "$state.new" "$state"
	echo "{\"id\": $id}" ;;
*) echo "fake gh: $method $path" >&2; exit 2 ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "gh"), []byte(script), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

func (e *ciEnv) comments() []struct {
	ID   int    `json:"id"`
	Body string `json:"body"`
} {
	var cs []struct {
		ID   int    `json:"id"`
		Body string `json:"body"`
	}
	b, err := os.ReadFile(e.ghState)
	if err != nil || json.Unmarshal(b, &cs) != nil {
		e.t.Fatalf("comments: %v %s", err, b)
	}
	return cs
}

// stepResult is what a step did.
type stepResult struct {
	name           string
	skipped        bool
	code           int
	stdout, stderr string
}

var exprRE = regexp.MustCompile(`\$\{\{\s*(.*?)\s*\}\}`)

// runGitHubJob runs the shell steps of a job as GitHub's runner would:
// bash -eo pipefail, the workflow's, job's and step's env with ${{ }}
// expressions taken from exprs, GITHUB_ENV and GITHUB_PATH honoured, step
// conditions from conds (an unknown expression or condition fails the
// test). It stops at the first failing step, as GitHub does.
func (e *ciEnv) runGitHubJob(wf ghWorkflow, job string, exprs map[string]string, conds map[string]func(outcomes map[string]string) bool) []stepResult {
	t := e.t
	t.Helper()
	j := wf.Jobs[job]
	tmp := t.TempDir()
	githubEnv, githubPath := filepath.Join(tmp, "github_env"), filepath.Join(tmp, "github_path")
	for _, f := range []string{githubEnv, githubPath} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	subst := func(s string) string {
		return exprRE.ReplaceAllStringFunc(s, func(m string) string {
			k := exprRE.FindStringSubmatch(m)[1]
			v, ok := exprs[k]
			if !ok {
				t.Fatalf("job %s: unknown expression ${{ %s }}: give the test a value for it", job, k)
			}
			return v
		})
	}
	env := map[string]string{}
	for k, v := range wf.Env {
		env[k] = subst(v)
	}
	for k, v := range j.Env {
		env[k] = subst(v)
	}
	env["RUNNER_TEMP"] = tmp
	env["GITHUB_ENV"] = githubEnv
	env["GITHUB_PATH"] = githubPath
	env["GITHUB_STEP_SUMMARY"] = filepath.Join(tmp, "summary.md")
	env["FAKE_GH_STATE"] = e.ghState
	for k, v := range exprs {
		if name, ok := strings.CutPrefix(k, "env:"); ok {
			env[name] = v // the runner's own variables (GITHUB_SHA…)
		}
	}
	path := []string{e.fakeGH()}
	outcomes := map[string]string{}
	var results []stepResult
	for _, s := range j.Steps {
		r := stepResult{name: s.Name}
		if s.Uses != "" {
			continue // done by the test: the checkout is e.repo.Work, Go is installed
		}
		if s.If != "" {
			cond, ok := conds[s.If]
			if !ok {
				t.Fatalf("job %s, step %q: unknown condition %q: give the test its meaning", job, s.Name, s.If)
			}
			if !cond(outcomes) {
				r.skipped = true
				results = append(results, r)
				if s.ID != "" {
					outcomes[s.ID] = "skipped"
				}
				continue
			}
		}
		stepEnv := map[string]string{}
		for k, v := range env {
			stepEnv[k] = v
		}
		for k, v := range s.Env {
			stepEnv[k] = subst(v)
		}
		cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s.Run)
		cmd.Dir = e.repo.Work
		cmd.Env = append([]string{}, e.base...)
		for k, v := range stepEnv {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Env = append(cmd.Env, "PATH="+strings.Join(path, ":")+":"+os.Getenv("PATH"))
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r.stdout, r.stderr = out.String(), errb.String()
		if err != nil {
			ee, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("step %q: %v", s.Name, err)
			}
			r.code = ee.ExitCode()
		}
		results = append(results, r)
		if s.ID != "" {
			outcomes[s.ID] = map[bool]string{true: "success", false: "failure"}[r.code == 0]
		}
		if strings.HasPrefix(s.Name, "Install vigocli") && r.code == 0 {
			e.fixInstall()
		}
		if r.code != 0 {
			break
		}
		// GITHUB_ENV and GITHUB_PATH apply to the next steps.
		if b, err := os.ReadFile(githubEnv); err == nil {
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					env[k] = v
				}
			}
		}
		if b, err := os.ReadFile(githubPath); err == nil {
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if line != "" && !strings.Contains(strings.Join(path, ":"), line) {
					path = append([]string{line}, path...)
				}
			}
		}
	}
	return results
}

func stepNamed(t *testing.T, rs []stepResult, prefix string) stepResult {
	t.Helper()
	for _, r := range rs {
		if strings.HasPrefix(r.name, prefix) {
			return r
		}
	}
	t.Fatalf("no step %q ran: %+v", prefix, rs)
	return stepResult{}
}

func readWorkflow(t *testing.T) ghWorkflow {
	t.Helper()
	b, err := os.ReadFile("../../examples/policy-ci.yml")
	if err != nil {
		t.Fatal(err)
	}
	var wf ghWorkflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatalf("examples/policy-ci.yml: %v", err)
	}
	return wf
}

// TestGitHubWorkflowShape checks what cannot be run: the triggers (no path
// filter, which leaves a required check pending), the jobs' conditions,
// the checkout of the whole history, one install recipe.
func TestGitHubWorkflowShape(t *testing.T) {
	t.Parallel()
	wf := readWorkflow(t)
	for _, ev := range []string{"pull_request", "push"} {
		n, ok := wf.On[ev]
		if !ok {
			t.Errorf("on: %s is missing", ev)
			continue
		}
		var m map[string]any
		_ = n.Decode(&m)
		for _, k := range []string{"paths", "paths-ignore"} {
			if _, bad := m[k]; bad {
				t.Errorf("on.%s.%s: a path filter leaves a required check pending on pull requests it skips; choose jobs with if: instead", ev, k)
			}
		}
	}
	if got := wf.Jobs["vet"].If; got != "github.event_name == 'pull_request'" {
		t.Errorf("jobs.vet.if = %q", got)
	}
	if got := wf.Jobs["applied"].If; got != "github.event_name == 'push'" {
		t.Errorf("jobs.applied.if = %q", got)
	}
	var installs []string
	for name, j := range wf.Jobs {
		for _, s := range j.Steps {
			if strings.HasPrefix(s.Uses, "actions/checkout@") && fmt.Sprint(s.With["fetch-depth"]) != "0" {
				t.Errorf("jobs.%s: checkout without fetch-depth: 0 (the diff and policy wait read the history)", name)
			}
			if strings.HasPrefix(s.Name, "Install vigocli") {
				installs = append(installs, s.Run)
			}
		}
	}
	if len(installs) != 2 || installs[0] != installs[1] || !strings.Contains(installs[0], `go install "github.com/vigo-enroll/vigo/cmd/vigocli@${VIGO_REF}"`) {
		t.Errorf("the install steps differ or do not go install vigocli@${VIGO_REF}: %q", installs)
	}
}

// TestGitHubWorkflow runs examples/policy-ci.yml: a pull request made with
// vigocli approved add --commit is vetted, its diff with fleet impact and
// replay is posted as one comment and updated in place on the next push;
// an invalid pull request fails vet with annotations; after the merge,
// policy wait sees the merge commit applied.
func TestGitHubWorkflow(t *testing.T) {
	e := newCIEnv(t)
	wf := readWorkflow(t)
	exprs := map[string]string{
		"vars.VIGO_SERVER":                 e.in.URL,
		"vars.VIGO_CA":                     e.caPEM,
		"secrets.VIGO_READONLY_TOKEN":      e.token,
		"github.token":                     "fake-github-token",
		"github.event.pull_request.number": "7",
		"github.repository":                "acme/policy",
		"env:GITHUB_EVENT_NAME":            "pull_request",
	}
	wf.Env["VIGO_REF"] = ref(t) // the workflow pins a release; the test installs this checkout
	conds := map[string]func(map[string]string) bool{
		"env.VIGO_SERVER != '' && env.VIGO_ADMIN_TOKEN != ''": func(map[string]string) bool { return true },
		"steps.diff.outcome == 'success'":                     func(o map[string]string) bool { return o["diff"] == "success" },
	}

	// The pull request, made as a new user would.
	code, out, errs := cliIn(e.repo.Work, "approved", "add", "*.stage.example.com", "--commit")
	if code != 0 {
		t.Fatalf("approved add --commit: %d\n%s\n%s", code, out, errs)
	}
	branch := e.repo.Git("branch", "--show-current")
	rs := e.runGitHubJob(wf, "vet", exprs, conds)
	for _, r := range rs {
		if r.code != 0 || r.skipped {
			t.Fatalf("step %q: exit %d skipped %v\nstdout:\n%s\nstderr:\n%s", r.name, r.code, r.skipped, r.stdout, r.stderr)
		}
	}
	if r := stepNamed(t, rs, "Vet the policy"); !strings.Contains(r.stdout, "policy . is valid: ") {
		t.Errorf("vet: %s", r.stdout)
	}
	cs := e.comments()
	if len(cs) != 2 || cs[0].Body != "LGTM" {
		t.Fatalf("comments after the first run: %+v", cs)
	}
	first := cs[1]
	for _, want := range []string{
		DiffMarker + "\n### Enrollment policy: 1 added, 0 removed, 0 changed\n",
		", the revision the server applies.",
		"- No active envoy revoked (of 1).",
		"- 1 past refusal of the last 7d would now be admitted (1 host): `x.stage.example.com`",
		"- Replay of the last 7d: no past enrollment would now be refused.",
		"  + *.stage.example.com\n",
	} {
		if !strings.Contains(first.Body, want) {
			t.Errorf("comment lacks %q:\n%s", want, first.Body)
		}
	}

	// The next push updates the same comment.
	code, out, errs = cliIn(e.repo.Work, "approved", "add", "build7.example.com")
	if code != 0 {
		t.Fatalf("approved add: %d %s %s", code, out, errs)
	}
	e.repo.Git("commit", "-q", "-am", "approve build7")
	rs = e.runGitHubJob(wf, "vet", exprs, conds)
	if r := rs[len(rs)-1]; r.code != 0 {
		t.Fatalf("second run, step %q: exit %d\n%s\n%s", r.name, r.code, r.stdout, r.stderr)
	}
	cs = e.comments()
	if len(cs) != 2 || cs[1].ID != first.ID || !strings.Contains(cs[1].Body, "### Enrollment policy: 2 added") {
		t.Errorf("the comment was not updated in place: %+v", cs)
	}

	// An invalid change: vet fails with annotations, the diff does not run.
	if err := os.WriteFile(filepath.Join(e.repo.Work, "typo.cue"), []byte("package policy\n\ntrusted_enrolment: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rs = e.runGitHubJob(wf, "vet", exprs, conds)
	last := rs[len(rs)-1]
	if last.name != "Vet the policy" || last.code != 1 ||
		!strings.Contains(last.stdout, "::error file=typo.cue,line=3,col=1,title=vigocli policy vet::trusted_enrolment: field not allowed (did you mean trusted_enrollment?)") {
		t.Errorf("vet of an invalid change: step %q exit %d\n%s\n%s", last.name, last.code, last.stdout, last.stderr)
	}
	if err := os.Remove(filepath.Join(e.repo.Work, "typo.cue")); err != nil {
		t.Fatal(err)
	}

	// The merge, then the job that waits for it.
	e.repo.Git("switch", "-q", "main")
	e.repo.Git("merge", "-q", "--no-ff", "-m", "Merge pull request #7", branch)
	merge := e.repo.Git("rev-parse", "HEAD")
	e.repo.Push()
	exprs["env:GITHUB_EVENT_NAME"] = "push"
	exprs["env:GITHUB_SHA"] = merge
	done := make(chan []stepResult, 1)
	go func() { done <- e.runGitHubJob(wf, "applied", exprs, conds) }()
	if code, body := e.in.Do(t, "POST", "/api/v1/policy/sync", nil, true); code != 200 {
		t.Fatalf("sync: HTTP %d %s", code, body)
	}
	rs = <-done
	if r := rs[len(rs)-1]; r.name != "Wait until the server applies the merge commit" || r.code != 0 || !strings.Contains(r.stdout, "revision "+merge+" is active") {
		t.Errorf("applied: step %q exit %d\n%s\n%s", r.name, r.code, r.stdout, r.stderr)
	}
}

// cliIn runs vigocli in-process on the policy folder dir (--dir).
func cliIn(dir string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(&globals{stdout: &out, stderr: &errb}, append(args, "--dir", dir))
	return code, out.String(), errb.String()
}

type glJob struct {
	Extends      string           `yaml:"extends"`
	BeforeScript []string         `yaml:"before_script"`
	Script       []string         `yaml:"script"`
	Rules        []map[string]any `yaml:"rules"`
	Only         any              `yaml:"only"`
}

// runGitLabJob runs a job's before_script and script as GitLab's runner
// does (each line in one bash, stopping at the first failure), with the
// file's variables and vars.
func (e *ciEnv) runGitLabJob(jobs map[string]glJob, vars map[string]string, name string, setVars map[string]string) stepResult {
	t := e.t
	t.Helper()
	j := jobs[name]
	before := j.BeforeScript
	if j.Extends != "" && before == nil {
		before = jobs[j.Extends].BeforeScript
	}
	var script strings.Builder
	script.WriteString("set -eo pipefail\n")
	for _, l := range append(append([]string{}, before...), j.Script...) {
		script.WriteString(l + "\n")
		if strings.HasPrefix(l, "go install ") {
			script.WriteString("eval \"$FIX_INSTALL\"\n")
		}
	}
	cmd := exec.Command("bash", "--noprofile", "--norc", "-c", script.String())
	cmd.Dir = e.repo.Work
	cmd.Env = append([]string{}, e.base...)
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range setVars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// After go install, the working tree's vigocli when the checkout has
	// changes (see fixInstall).
	fix := ":"
	if out, _ := exec.Command("git", "status", "--porcelain", "--", "../..").Output(); len(bytes.TrimSpace(out)) > 0 {
		dir, _ := os.Getwd()
		fix = fmt.Sprintf("(cd %q && go build -o \"$(go env GOPATH)/bin/vigocli\" .)", dir)
	}
	cmd.Env = append(cmd.Env, "FIX_INSTALL="+fix, "CI_BUILDS_DIR="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	r := stepResult{name: name}
	if err := cmd.Run(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("job %s: %v", name, err)
		}
		r.code = ee.ExitCode()
	}
	r.stdout, r.stderr = out.String(), errb.String()
	return r
}

// TestGitLabCI runs examples/policy-ci.gitlab.yml: its jobs choose
// themselves by pipeline source (never by changed paths); on a merge
// request it vets and renders the diff against the server; after the
// merge it waits until the server applies the commit. (Posting the note
// needs GitLab: that part runs only with VIGO_GITLAB_TOKEN, which the test
// leaves unset.)
func TestGitLabCI(t *testing.T) {
	b, err := os.ReadFile("../../examples/policy-ci.gitlab.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var vars map[string]string
	jobs := map[string]glJob{}
	for k, n := range doc {
		if k == "variables" {
			if err := n.Decode(&vars); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var j glJob
		if err := n.Decode(&j); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		jobs[k] = j
	}
	for name, want := range map[string]string{
		"policy:vet":     `$CI_PIPELINE_SOURCE == "merge_request_event"`,
		"policy:applied": `$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH && $CI_PIPELINE_SOURCE == "push"`,
	} {
		j := jobs[name]
		if len(j.Rules) != 1 || j.Rules[0]["if"] != want || j.Rules[0]["changes"] != nil || j.Only != nil {
			t.Errorf("%s: rules %v (only %v), want one rule if: %s and no changes:", name, j.Rules, j.Only, want)
		}
	}
	if vars["GIT_DEPTH"] != "0" {
		t.Errorf("variables.GIT_DEPTH = %q, want \"0\": the diff and policy wait read the history", vars["GIT_DEPTH"])
	}

	e := newCIEnv(t)
	vars["VIGO_REF"] = ref(t)
	code, out, errs := cliIn(e.repo.Work, "approved", "add", "*.stage.example.com", "--commit")
	if code != 0 {
		t.Fatalf("approved add --commit: %d\n%s\n%s", code, out, errs)
	}
	branch := e.repo.Git("branch", "--show-current")
	server := map[string]string{"VIGO_SERVER": e.in.URL, "VIGO_ADMIN_TOKEN": e.token, "VIGO_CA": e.caPEM, "CI_PIPELINE_SOURCE": "merge_request_event"}

	r := e.runGitLabJob(jobs, vars, "policy:vet", server)
	if r.code != 0 || !strings.Contains(r.stdout, "policy . is valid") || !strings.Contains(r.stdout, DiffMarker) ||
		!strings.Contains(r.stdout, "1 past refusal of the last 7d would now be admitted (1 host): `x.stage.example.com`") {
		t.Errorf("policy:vet: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.repo.Work, "policy-diff.md")); err != nil {
		t.Errorf("the artifact policy-diff.md: %v", err)
	}
	os.Remove(filepath.Join(e.repo.Work, "policy-diff.md"))
	// Without the server's variables, only vet.
	r = e.runGitLabJob(jobs, vars, "policy:vet", map[string]string{"CI_PIPELINE_SOURCE": "merge_request_event"})
	if r.code != 0 || strings.Contains(r.stdout, DiffMarker) {
		t.Errorf("policy:vet without a server: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	e.repo.Git("switch", "-q", "main")
	e.repo.Git("merge", "-q", "--no-ff", "-m", "Merge branch "+branch, branch)
	merge := e.repo.Git("rev-parse", "HEAD")
	e.repo.Push()
	server["CI_COMMIT_SHA"] = merge
	done := make(chan stepResult, 1)
	go func() { done <- e.runGitLabJob(jobs, vars, "policy:applied", server) }()
	if code, body := e.in.Do(t, "POST", "/api/v1/policy/sync", nil, true); code != 200 {
		t.Fatalf("sync: HTTP %d %s", code, body)
	}
	if r := <-done; r.code != 0 || !strings.Contains(r.stdout, "revision "+merge+" is active") {
		t.Errorf("policy:applied: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}
