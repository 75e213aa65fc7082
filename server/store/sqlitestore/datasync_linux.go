package sqlitestore

import (
	"os"
	"syscall"
)

// datasync is fdatasync(2): it flushes the data and the size, without the
// journal commit an fsync needs for the modification time. SQLite syncs its
// WAL the same way on Linux.
func datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
