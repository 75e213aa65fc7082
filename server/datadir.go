package server

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
)

// prepareDataDir creates the data folder (0700) or checks an existing one.
// The folder holds the CA key, the admin token, the database and the
// policy cache: only the server's user may enter it.
//
// An existing folder that other users can read or enter (0755 is what a
// package, `make run`'s mkdir -p vigo-data/dist or an operator's mkdir
// usually leaves) is tightened to 0700 and the change is logged: the
// server owns this folder, and refusing to start would only teach
// operators to chmod it by hand. A folder that others can write to is
// refused instead and left as it is: it may be a shared folder such as
// /tmp (whose mode must not change), and files in it may already have
// been planted by someone else.
func prepareDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	if runtime.GOOS == "windows" {
		return nil // no Unix permission bits; ACLs are the operator's
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data folder: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("server.data_dir %s is not a folder", dir)
	}
	mode := fi.Mode()
	switch {
	case mode.Perm()&0o022 != 0 || mode&fs.ModeSticky != 0:
		return fmt.Errorf("server.data_dir %s is writable by other users (mode %s): give the server a folder of its own, e.g. mkdir -m 0700 %s, or name a folder that does not exist yet (a subfolder of a mounted volume, say), which the server creates 0700", dir, mode, dir)
	case mode.Perm()&0o077 != 0:
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("server.data_dir %s is readable by other users (mode %s) and cannot be made private: %w (name a folder that does not exist yet, which the server creates 0700)", dir, mode, err)
		}
		log.Warn("data folder was readable by other users: made it private (0700)", "dir", dir, "old_mode", mode.String())
	}
	return nil
}
