// Command vigosrv is the Vigo Enroll server.
package main

import (
	"os"

	"github.com/vigo-enroll/vigo/policy/sandbox"
)

func main() {
	// Policy is evaluated in a child process of this program: see sandbox.
	sandbox.RunIfChild()
	os.Exit(run(os.Args[1:]))
}
