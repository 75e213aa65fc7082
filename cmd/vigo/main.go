// Command vigo is the Vigo Enroll agent: it registers this host with the
// server and then checks in over gRPC with mutual TLS.
package main

import (
	"os"

	"github.com/vigo-enroll/vigo/agent"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, agent.Config{}, true)) }
