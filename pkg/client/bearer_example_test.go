package client_test

import (
	"crypto/tls"
	"crypto/x509"
	"log"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tlog-dev/tlog/pkg/client"
)

// A server started with --tokens-file wants a token for appends (and, with
// --public-reads=false, for reads too). Send it with every call as per-RPC
// credentials, over TLS.
func ExampleBearerToken() {
	// The CA that signed the server's certificate (--tls-cert), if it is not
	// one the system trusts.
	pem, err := os.ReadFile("ca.pem")
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)

	conn, err := grpc.NewClient("tlog.example.com:7600",
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})),
		// The token `tlogd token new` printed, e.g. from the environment.
		grpc.WithPerRPCCredentials(client.BearerToken(os.Getenv("TLOG_TOKEN"))))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	c, err := client.New(client.Config{
		Conn:        conn,
		Log:         "payments",
		VerifierKey: "tlog.example.com/logs/payments+1a2b3c4d+AfKFbhFtOPdc8GLIOaLzTcS0sT+0zoWYrdORqOtEyBcE",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
