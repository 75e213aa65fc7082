package main

import (
	"flag"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestDistScripts runs testdata/dist/*.txtar: vigocli dist keygen, manifest,
// sign and verify on real files.
func TestDistScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/dist",
		UpdateScripts: flag.Lookup("update").Value.String() == "true",
	})
}
