// Command vigocli is the administration CLI of Vigo Enroll: tokens, envoys,
// audit, policy (vet, explain, status, sync) and agent distribution keys.
package main

import (
	"os"

	"github.com/vigo-enroll/vigo/policy/sandbox"
)

func main() {
	// Policy is evaluated in a child process of this program: see sandbox.
	sandbox.RunIfChild()
	os.Exit(Main())
}
