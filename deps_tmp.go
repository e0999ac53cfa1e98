package tmp

import (
	_ "github.com/jackc/pgx/v5"
	_ "github.com/transparency-dev/formats/log"
	_ "github.com/transparency-dev/formats/note"
	_ "github.com/transparency-dev/merkle"
	_ "github.com/transparency-dev/merkle/compact"
	_ "github.com/transparency-dev/merkle/proof"
	_ "github.com/transparency-dev/merkle/rfc6962"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/mod/sumdb/note"
	_ "golang.org/x/mod/sumdb/tlog"
	_ "google.golang.org/grpc"
	_ "google.golang.org/protobuf/proto"
)
