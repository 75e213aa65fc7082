package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/vigo-enroll/vigo/server/ca"
	"github.com/vigo-enroll/vigo/server/carotate"
	"github.com/vigo-enroll/vigo/server/store"
	"github.com/vigo-enroll/vigo/server/store/pgstore"
	"github.com/vigo-enroll/vigo/server/store/sqlitestore"
)

// openStore opens the configured database.
func openStore(ctx context.Context, cfg *Config) (store.Store, error) {
	var st store.Store
	var err error
	switch cfg.Database.Driver {
	case "postgres":
		dsn := cfg.Database.DSN
		if cfg.Database.DSNFile != "" {
			b, err := os.ReadFile(cfg.Database.DSNFile)
			if err != nil {
				return nil, fmt.Errorf("read database.dsn_file: %w", err)
			}
			dsn = strings.TrimSpace(string(b))
		}
		st, err = pgstore.Open(ctx, dsn, pgstore.Options{})
	default:
		st, err = sqlitestore.Open(ctx, cfg.StatePaths().Database, sqlitestore.Options{})
	}
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return st, nil
}

// CARotator opens what `vigosrv ca` needs, beside a running server or
// not: the server's CA (which must exist: it is never created here) and
// its database. actor names the operator in audit events. Close the
// returned store when done.
func CARotator(ctx context.Context, cfg *Config, actor string, logger *slog.Logger) (*carotate.Rotator, store.Store, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	caCfg := ca.Config{Dir: cfg.Server.DataDir, CAFile: cfg.Server.TLS.CAFile, CAKeyFile: cfg.Server.TLS.CAKeyFile,
		Hostnames: append([]string{cfg.Server.Hostname}, cfg.Server.TLSSANs...)}
	caFile, _ := caCfg.CAPaths()
	if _, err := os.Stat(caFile); errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no CA at %s: start the server once (vigosrv serve) or give the right --data-dir", caFile)
	}
	authority, err := ca.LoadOrCreate(caCfg)
	if err != nil {
		return nil, nil, err
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	r, err := carotate.New(carotate.Config{Store: st, CA: authority, Replica: cfg.Server.Replica, Actor: actor, Logger: logger,
		ApplyDelay: time.Duration(cfg.Server.ReplicaRefresh)})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return r, st, nil
}
