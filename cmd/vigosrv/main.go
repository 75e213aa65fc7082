// Command vigosrv is the Vigo Enroll server.
package main

import "os"

func main() { os.Exit(run(os.Args[1:])) }
