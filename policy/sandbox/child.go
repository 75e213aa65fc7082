package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/vigo-enroll/vigo/policy"
)

// maxInput bounds the request a child reads: the policy files (8 MiB at
// most, see gitsync.MaxTotalSize) in base64, with room to spare.
const maxInput = 32 << 20

// RunIfChild runs the policy evaluator and exits when this process was
// started by Evaluate as its child; otherwise it returns at once. Call it
// first thing in main (and in TestMain of tests that evaluate through the
// sandbox), before anything else is started.
func RunIfChild() {
	if len(os.Args) < 2 || os.Args[len(os.Args)-1] != childArg || os.Getenv(childEnv) != "1" {
		return
	}
	os.Exit(child(os.Stdin, os.Stdout))
}

// child is the evaluator process: read the request, limit itself, evaluate,
// answer. It returns the exit code.
func child(stdin io.Reader, stdout io.Writer) int {
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	send := func(m message) {
		_ = enc.Encode(m)
		_ = w.Flush()
	}
	fail := func(format string, args ...any) int {
		send(message{Failure: fmt.Sprintf(format, args...)})
		return 1
	}
	send(message{Hello: protocolVersion})
	b, err := io.ReadAll(io.LimitReader(stdin, maxInput+1))
	if err != nil {
		return fail("read the request: %v", err)
	}
	if len(b) > maxInput {
		return fail("the request is larger than %s", FormatSize(maxInput))
	}
	var req request
	if err := json.Unmarshal(b, &req); err != nil {
		return fail("decode the request: %v", err)
	}
	if req.Protocol != protocolVersion {
		return fail("protocol version %d, this evaluator speaks %d", req.Protocol, protocolVersion)
	}
	lim := Limits{Memory: req.Memory, Timeout: req.Timeout}.withDefaults()
	files := make([]policy.File, len(req.Files))
	for i, f := range req.Files {
		files[i] = policy.File{Name: f.Name, Data: f.Data}
	}
	b, req.Files = nil, nil

	// The hard limits first, before a byte of policy is evaluated.
	if err := limitSelf(lim); err != nil {
		return fail("limit the evaluator: %v", err)
	}
	// The collector works harder as the heap nears the budget, so that a
	// policy that fits is not killed for garbage it left behind.
	debug.SetMemoryLimit(lim.Memory * 3 / 4)

	start := time.Now()
	spec, err := policy.Evaluate(files, policy.EvalOptions{Progress: func(f string) {
		send(message{Progress: &f})
	}})
	if err != nil {
		es, ok := err.(policy.Errors)
		if !ok {
			return fail("%v", err)
		}
		m := message{Errors: make([]wireError, len(es)), Elapsed: time.Since(start)}
		for i, e := range es {
			m.Errors[i] = wireError{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Msg}
		}
		send(m)
		return 0
	}
	send(message{Spec: spec, Elapsed: time.Since(start)})
	return 0
}
