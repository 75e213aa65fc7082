package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
)

// Snapshot writes a consistent copy of the database at src to dst, which
// must not exist, while other processes (a running server) keep reading
// and writing src: VACUUM INTO reads one snapshot of the WAL database in
// a read transaction, so it never blocks the writer and never copies half
// a transaction, which copying the file (and its -wal) could. The copy is
// compacted, written 0600 (it holds what the database holds) and synced.
// It returns the copy's schema version.
func Snapshot(ctx context.Context, src, dst string) (int, error) {
	if _, err := os.Stat(src); err != nil {
		// Opening a missing file would create an empty database.
		return 0, fmt.Errorf("snapshot sqlite database: %w", err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("snapshot sqlite database to %s: the file exists", dst)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: src}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return 0, fmt.Errorf("snapshot sqlite database %s: %w", src, err)
	}
	defer db.Close()
	// Created before SQLite writes to it, so that the copy is never
	// readable by others, whatever the umask.
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("snapshot sqlite database: %w", err)
	}
	f.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		os.Remove(dst)
		return 0, fmt.Errorf("snapshot sqlite database %s: %w", src, err)
	}
	if err := syncFile(dst); err != nil {
		return 0, fmt.Errorf("snapshot sqlite database: sync %s: %w", dst, err)
	}
	var v int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("snapshot sqlite database %s: read schema version: %w", src, err)
	}
	return v, nil
}
