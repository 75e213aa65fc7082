// Package sandbox evaluates policy files in a child process with a hard
// memory limit and a time limit, so that hostile policy content can never
// hurt the process that asked.
//
// # Why a child process
//
// A policy arrives from pull requests: a few hundred bytes of CUE can ask
// for gigabytes of memory or minutes of CPU. The Go runtime cannot recover
// from running out of memory ("fatal error: out of memory" kills the whole
// process, recover sees nothing), and a CUE evaluation cannot be
// interrupted from outside. So the budget is held by construction:
//
//   - the calling program (vigosrv, vigocli) re-executes itself with a
//     hidden argument ([RunIfChild] at the top of main) and hands the policy
//     files to the child on stdin;
//   - the child caps its own address space (RLIMIT_AS, on Linux) at what it
//     uses at start plus the memory budget, before it reads a byte of
//     policy, and sets the garbage collector's soft limit below it: past the
//     budget an allocation fails and the child dies, never the parent;
//   - the parent kills the child when the time budget is over, when its
//     context is cancelled (a newer revision, shutdown), and — through the
//     kernel's parent-death signal on Linux — when the parent itself dies;
//   - the child writes, before each expensive step, which file it is
//     evaluating, so the parent can say which limit was hit while evaluating
//     which file.
//
// The child speaks a small versioned protocol: one JSON request on stdin
// (the files), JSON objects on stdout (a hello, progress, then the
// evaluated [policy.Spec] or the problems as positioned errors). The parent
// bounds what it reads back. Evaluating a normal policy this way costs one
// process start (tens of milliseconds) on top of the evaluation itself.
//
// On systems other than Linux the memory limit is the garbage collector's
// soft limit only; the time limit holds everywhere.
package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/vigo-enroll/vigo/policy"
)

// Default budgets of one evaluation.
const (
	DefaultMemory  = 256 << 20
	DefaultTimeout = 10 * time.Second
	// MinMemory is the smallest memory budget accepted: below it, the CUE
	// runtime itself does not fit.
	MinMemory = 32 << 20
)

// protocolVersion is the version of the parent-child protocol.
const protocolVersion = 1

// childArg and childEnv mark a child process: both must be present.
const (
	childArg = "__vigo-policy-eval"
	childEnv = "VIGO_POLICY_SANDBOX"
)

// maxOutput bounds what the parent reads from a child: the evaluated spec
// of a policy is a few times the size of its files (8 MiB at most), unless
// comprehensions generate entries; a spec this large is refused.
const maxOutput = 32 << 20

// Limits is the budget of one evaluation. Zero fields mean the defaults.
type Limits struct {
	// Memory is the most memory, in bytes, that evaluation may take
	// (DefaultMemory when zero).
	Memory int64
	// Timeout is the longest an evaluation may run, process start included
	// (DefaultTimeout when zero).
	Timeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.Memory <= 0 {
		l.Memory = DefaultMemory
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	return l
}

// Check reports whether the limits can work.
func (l Limits) Check() error {
	l = l.withDefaults()
	if l.Memory < MinMemory {
		return fmt.Errorf("memory limit %s is below the minimum of %s", FormatSize(l.Memory), FormatSize(MinMemory))
	}
	return nil
}

// String describes the limits, such as "256 MiB, 10s".
func (l Limits) String() string {
	l = l.withDefaults()
	return FormatSize(l.Memory) + ", " + l.Timeout.String()
}

// BudgetError is returned when an evaluation went over a limit. The revision
// must be refused like an invalid one.
type BudgetError struct {
	// Limit is "memory", "time" or "output" (the evaluated policy is
	// larger than the parent reads back).
	Limit  string
	Limits Limits
	// File is the file being evaluated on its own when the limit was hit;
	// "" when all files were being evaluated together (or the process had
	// not started evaluating).
	File string
}

func (e *BudgetError) Error() string {
	var what string
	switch e.Limit {
	case "memory":
		what = "the memory limit of " + FormatSize(e.Limits.Memory)
	case "time":
		what = "the time limit of " + e.Limits.Timeout.String()
	default:
		what = fmt.Sprintf("the size limit of %s for an evaluated policy", FormatSize(maxOutput))
	}
	where := "all files together"
	if e.File != "" {
		where = e.File
	}
	return fmt.Sprintf("evaluation exceeded %s while evaluating %s: simplify the policy (comprehensions and string operations that grow without bound are the usual cause)", what, where)
}

// PolicyError returns the problem as a policy error located at the file.
func (e *BudgetError) PolicyError() *policy.Error {
	msg := e.Error()
	if e.File != "" {
		msg = strings.Replace(msg, " while evaluating "+e.File, " while evaluating this file", 1)
	}
	return &policy.Error{File: e.File, Msg: msg}
}

// CrashError is returned when the evaluating process failed in another way
// than by exceeding a budget, such as a fatal error of the CUE evaluator.
// The revision must be refused: the same content would fail again.
type CrashError struct {
	// File is the file being evaluated on its own, "" for all files.
	File string
	// Detail is the end of what the process printed, or how it ended.
	Detail string
}

func (e *CrashError) Error() string {
	where := "all files together"
	if e.File != "" {
		where = e.File
	}
	return fmt.Sprintf("the policy evaluator failed while evaluating %s: %s", where, e.Detail)
}

// Errors returns the problems of a refused evaluation as policy errors: the
// policy's own Errors, or one error for an exceeded budget or a crash. ok is
// false for any other error (the evaluation could not run: try again).
func Errors(err error) (errs policy.Errors, ok bool) {
	var pe policy.Errors
	var be *BudgetError
	var ce *CrashError
	switch {
	case errors.As(err, &pe):
		return pe, true
	case errors.As(err, &be):
		return policy.Errors{be.PolicyError()}, true
	case errors.As(err, &ce):
		return policy.Errors{{File: ce.File, Msg: ce.Error()}}, true
	}
	return nil, false
}

// request is what the parent writes to the child's stdin.
type request struct {
	Protocol int           `json:"protocol"`
	Memory   int64         `json:"memory"`
	Timeout  time.Duration `json:"timeout"`
	Files    []file        `json:"files"`
}

type file struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// message is one object the child writes to stdout.
type message struct {
	Hello    int           `json:"hello,omitempty"`
	Progress *string       `json:"progress,omitempty"`
	Spec     *policy.Spec  `json:"spec,omitempty"`
	Errors   []wireError   `json:"errors,omitempty"`
	Failure  string        `json:"failure,omitempty"`
	Elapsed  time.Duration `json:"elapsed,omitempty"`
}

type wireError struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`
	Path string `json:"path,omitempty"`
	Msg  string `json:"msg"`
}

// Evaluator runs evaluations in child processes.
type Evaluator struct {
	// Limits is the budget of each evaluation.
	Limits Limits
	// Command is the child's program and its arguments, before the hidden
	// child argument; nil means this program (os.Executable), which must
	// call RunIfChild at the top of its main (or TestMain).
	Command []string
}

// Evaluate evaluates files as [policy.Evaluate] does, in a child process
// within l. It returns the spec, or policy.Errors for an invalid policy, a
// *BudgetError or *CrashError for a refused one, ctx's error when ctx was
// cancelled first, and any other error when the child could not be run.
func Evaluate(ctx context.Context, files []policy.File, l Limits) (*policy.Spec, error) {
	return (&Evaluator{Limits: l}).Evaluate(ctx, files)
}

// Evaluate is the package's Evaluate with e's settings.
func (e *Evaluator) Evaluate(ctx context.Context, files []policy.File) (*policy.Spec, error) {
	lim := e.Limits.withDefaults()
	if err := lim.Check(); err != nil {
		return nil, fmt.Errorf("evaluate policy: %w", err)
	}
	argv := e.Command
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("evaluate policy: find this program to run the evaluator: %w", err)
		}
		argv = []string{exe}
	}
	req := request{Protocol: protocolVersion, Memory: lim.Memory, Timeout: lim.Timeout, Files: make([]file, len(files))}
	for i, f := range files {
		req.Files[i] = file{Name: f.Name, Data: f.Data}
	}
	in, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("evaluate policy: %w", err)
	}

	cmd := exec.Command(argv[0], append(argv[1:len(argv):len(argv)], childArg)...)
	// Why a minimal environment: the child needs nothing from the parent's,
	// which may hold secrets (VIGO_ADMIN_TOKEN…). GOTRACEBACK=none keeps a
	// fatal error to its one-line reason.
	cmd.Env = []string{childEnv + "=1", "GOTRACEBACK=none"}
	cmd.Dir = os.TempDir()
	cmd.Stdin = bytes.NewReader(in)
	stderr := &tail{max: 4 << 10}
	cmd.Stderr = stderr
	setProcAttr(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("evaluate policy: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("evaluate policy: start the evaluator %s: %w", argv[0], err)
	}

	var (
		mu       sync.Mutex
		progress string
		hello    bool
		result   *message
		readErr  error
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		lr := &io.LimitedReader{R: stdout, N: maxOutput}
		dec := json.NewDecoder(bufio.NewReader(lr))
		for {
			var m message
			err := dec.Decode(&m)
			mu.Lock()
			switch {
			case err == nil && m.Hello != 0:
				hello = m.Hello == protocolVersion
			case err == nil && m.Progress != nil:
				progress = *m.Progress
			case err == nil:
				result = &m
			case lr.N <= 0:
				readErr = errOutput
			case !errors.Is(err, io.EOF):
				readErr = err
			}
			mu.Unlock()
			if err != nil || result != nil {
				// Drain, so that the child never blocks on a full pipe.
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
	}()

	waitDone := make(chan error, 1)
	go func() {
		<-readDone
		waitDone <- cmd.Wait()
	}()
	timer := time.NewTimer(lim.Timeout)
	defer timer.Stop()
	var waitErr error
	var stopped error // why the parent killed the child, if it did
	select {
	case waitErr = <-waitDone:
	case <-timer.C:
		stopped = errTimeout
	case <-ctx.Done():
		stopped = ctx.Err()
	}
	if stopped != nil {
		_ = cmd.Process.Kill()
		waitErr = <-waitDone
	}

	mu.Lock()
	defer mu.Unlock()
	switch {
	case errors.Is(stopped, errTimeout):
		return nil, &BudgetError{Limit: "time", Limits: lim, File: progress}
	case stopped != nil:
		return nil, fmt.Errorf("evaluate policy: %w", stopped)
	case !hello:
		return nil, fmt.Errorf("evaluate policy: %s did not start the policy evaluator (%s); it must call sandbox.RunIfChild first thing in main", argv[0], describeExit(waitErr, stderr.String()))
	case errors.Is(readErr, errOutput):
		return nil, &BudgetError{Limit: "output", Limits: lim, File: progress}
	case result != nil && waitErr == nil:
		return decodeResult(result)
	case outOfMemory(stderr.String()):
		return nil, &BudgetError{Limit: "memory", Limits: lim, File: progress}
	}
	return nil, &CrashError{File: progress, Detail: describeExit(waitErr, stderr.String())}
}

var (
	errTimeout = errors.New("timeout")
	errOutput  = errors.New("output too large")
)

func decodeResult(m *message) (*policy.Spec, error) {
	switch {
	case m.Failure != "":
		return nil, fmt.Errorf("evaluate policy: %s", m.Failure)
	case len(m.Errors) > 0:
		es := make(policy.Errors, len(m.Errors))
		for i, e := range m.Errors {
			es[i] = &policy.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Msg}
		}
		return nil, es
	case m.Spec == nil:
		return nil, errors.New("evaluate policy: the evaluator returned nothing")
	}
	return m.Spec, nil
}

// outOfMemory reports whether the child's output says it ran out of memory
// (the Go runtime's "fatal error: out of memory", or a failed thread or
// stack allocation under the address-space limit).
func outOfMemory(stderr string) bool {
	// ThreadSanitizer (a -race build) says "failed to allocate … (errno: 12)".
	for _, s := range []string{"out of memory", "cannot allocate memory", "failed to create new OS thread", "stack exceeds", "newosproc", "failed to allocate"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

func describeExit(err error, stderr string) string {
	// The first line is the reason of a fatal error or a panic.
	detail, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	if len(detail) > 300 {
		detail = detail[:300] + "…"
	}
	switch {
	case err == nil && detail == "":
		return "it ended without an answer"
	case err == nil:
		return detail
	case detail == "":
		return err.Error()
	}
	return err.Error() + ": " + detail
}

// tail keeps the first and the last bytes written to it: a Go runtime
// prints the reason of a fatal error first and goroutine traces after it.
type tail struct {
	mu   sync.Mutex
	max  int
	head []byte
	buf  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := min(t.max/4-len(t.head), len(p)); n > 0 {
		t.head = append(t.head, p[:n]...)
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// String returns the first line and the end of what was written.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	first, _, _ := strings.Cut(string(t.head), "\n")
	if strings.HasPrefix(string(t.buf), first) {
		return string(t.buf)
	}
	return first + "\n" + string(t.buf)
}
