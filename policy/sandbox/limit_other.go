//go:build !linux

package sandbox

import "os/exec"

// limitSelf has no hard memory limit to set outside Linux: the garbage
// collector's soft limit (set by the caller) and the parent's timer remain.
func limitSelf(Limits) error { return nil }

func setProcAttr(*exec.Cmd) {}
