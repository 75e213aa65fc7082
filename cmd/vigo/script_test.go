package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/vigo-enroll/vigo/agent"
	"github.com/vigo-enroll/vigo/server/grpcapi/grpcapitest"
	"github.com/vigo-enroll/vigo/server/store"
)

// TestMain lets testscript run vigo in-process as the "vigo" command.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"vigo": func() {
			os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, agent.Config{MaxBackoff: 10 * time.Millisecond}, false))
		},
	})
}

type envKey struct{}

// TestScripts runs testdata/scripts/*.txtar, each against its own real
// server (gRPC with mTLS and the HTTPS register stand-in of grpcapitest) on
// loopback. $SERVER is the HTTPS URL, $FINGERPRINT the CA's fingerprint.
// Extra commands:
//
//	exitcode N CMD ARGS...   run CMD, expect exit status N
//	revoke DIR REASON        revoke the envoy registered in DIR, as policy revision 3f2a9c1...
//	rebootstrap DIR          flag the envoy registered in DIR for rebootstrap
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/scripts",
		Setup: func(env *testscript.Env) error {
			e := grpcapitest.New(t, grpcapitest.Options{})
			env.Setenv("SERVER", e.HTTPS.URL)
			env.Setenv("FINGERPRINT", e.CA.Fingerprint())
			env.Values[envKey{}] = e
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) < 2 {
					ts.Fatalf("usage: exitcode N command [args...]")
				}
				want, err := strconv.Atoi(args[0])
				if err != nil {
					ts.Fatalf("exitcode: %v", err)
				}
				got := 0
				if err := ts.Exec(args[1], args[2:]...); err != nil {
					var ee *exec.ExitError
					if !errors.As(err, &ee) {
						ts.Fatalf("exitcode: %v", err)
					}
					got = ee.ExitCode()
				}
				if got != want {
					ts.Fatalf("exit status %d, want %d", got, want)
				}
			},
			"revoke": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 2 {
					ts.Fatalf("usage: revoke DIR REASON")
				}
				e := ts.Value(envKey{}).(*grpcapitest.Env)
				enr, err := agent.Load(ts.MkAbs(args[0]))
				ts.Check(err)
				_, err = e.Store.RevokeEnvoys(context.Background(), []store.Revocation{{UUID: enr.File.UUID, Reason: args[1], Revision: "3f2a9c1d5e", At: time.Now()}})
				ts.Check(err)
				e.Server.EnvoyChanged(enr.File.UUID)
			},
			"rebootstrap": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: rebootstrap DIR")
				}
				e := ts.Value(envKey{}).(*grpcapitest.Env)
				enr, err := agent.Load(ts.MkAbs(args[0]))
				ts.Check(err)
				ts.Check(e.Store.SetEnvoyFlags(context.Background(), enr.File.UUID, store.EnvoyFlags{Rebootstrap: true},
					store.AuditEvent{Type: store.AuditEnvoyRebootstrap, EnvoyUUID: enr.File.UUID, At: time.Now()}))
				e.Server.EnvoyChanged(enr.File.UUID)
			},
		},
	})
}
