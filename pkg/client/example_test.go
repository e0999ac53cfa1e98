package client_test

import (
	"context"
	"fmt"
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tlog-dev/tlog/pkg/client"
)

func Example() {
	ctx := context.Background()
	// The caller owns the connection: choose TLS and credentials here.
	conn, err := grpc.NewClient("127.0.0.1:7600", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	c, err := client.New(client.Config{
		Conn: conn,
		Log:  "default",
		// The log's verifier key, obtained out of band.
		VerifierKey: "tlog.localhost/logs/default+1a2b3c4d+AfKFbhFtOPdc8GLIOaLzTcS0sT+0zoWYrdORqOtEyBcE",
		// Remember the newest verified checkpoint between runs, to notice
		// a log that rolls back or forks.
		TrustedState: client.FileStore("default.checkpoint"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close() // sends what is pooled

	// Concurrent Appends share RPCs.
	r, err := c.Append(ctx, []byte(`{"actor":"alice","action":"login"}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended at index", r.Index, "in the tree of size", r.Checkpoint.Size)

	// AppendAndProve also verifies the entry's inclusion proof, and returns
	// an offline-verifiable receipt.
	p, err := c.AppendAndProve(ctx, []byte(`{"actor":"bob","action":"delete","resource":"invoice/42"}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("proved at index %d; receipt:\n%s", p.Index, p.Receipt())

	// Read the log back, every entry verified.
	for e, err := range c.Entries(ctx, 0, 10) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d: %s\n", e.Index, e.Data)
	}
}
