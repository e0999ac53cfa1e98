package receipt_test

import (
	"bytes"
	"fmt"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tree"
)

func Example() {
	// A log of five entries, with a fixed key so that the output is stable.
	// (memTiles is an in-memory tree.TileReader.)
	const origin = "example.com/log"
	skey, vkey, _ := checkpoint.GenerateKey(origin, bytes.NewReader(make([]byte, 32)))
	signer, _ := checkpoint.NewSigner(skey)
	verifier, _ := checkpoint.NewVerifier(vkey)
	var leaves []tree.Hash
	for _, e := range []string{"zero", "one", "two", "three", "four"} {
		leaves = append(leaves, tree.LeafHash([]byte(e)))
	}
	edge, tiles, _ := tree.EmptyEdge().Append(leaves)
	store := memTiles{}
	store.put(tiles)

	// The log issues a receipt for entry 2.
	proof, _ := tree.InclusionProof(store, 2, edge.Size())
	signed, _ := checkpoint.Sign(checkpoint.Checkpoint{Origin: origin, Size: edge.Size(), Hash: edge.Root()}, signer)
	doc := receipt.Receipt{Extra: []byte("two.txt"), Index: 2, Proof: proof, Checkpoint: signed}.Marshal()
	fmt.Printf("%s", doc)

	// A client reads it and checks it against the entry it holds.
	r, err := receipt.Parse(doc)
	if err != nil {
		fmt.Println(err)
		return
	}
	c, _, err := receipt.Verify(r, tree.LeafHash([]byte("two")), verifier)
	fmt.Printf("verified: %v, tree size %d, extra %q\n", err == nil, c.Size, r.Extra)
	// Output:
	// c2sp.org/tlog-proof@v1
	// extra dHdvLnR4dA==
	// index 2
	// Zx8UbF5HHooag6PCFM5LqQe486WIjRTMjNPOdbsS75Q=
	// iiq+yu+Pz0GJ9OZMFdfUJhwUJRvf4oYcY90ek68bmUs=
	// 9xWrP6pdBx5uKsS7mU1b9zWUPcw3mdoNCF55gM+5M2o=
	//
	// example.com/log
	// 5
	// ii7ViYyVMrUss8/JH3IOusEasWyEafEphOEB4JSXozA=
	//
	// — example.com/log Hd5FMXgq9rPkZTkePX0Z988odF0g6VyxwtI/rrPiMn1aMNv9ZQGLFHcqXHztBTrntBNRTxrdqp32rEPk9v94Wy2hLgQ=
	// verified: true, tree size 5, extra "two.txt"
}
