// Command vigocli is the administration CLI of Vigo Enroll: tokens, envoys,
// audit, policy (vet, explain, status, sync) and agent distribution keys.
package main

import (
	"os"
)

func main() { os.Exit(Main()) }
