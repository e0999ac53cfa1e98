package server

import (
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
)

// TestStatusStorageRefusals: storage refusing a batch the sequencer built
// (and stopping the log with it) is an internal error, not a retriable one.
func TestStatusStorageRefusals(t *testing.T) {
	for _, cause := range []error{storage.ErrInvalid, storage.ErrDuplicate} {
		err := fmt.Errorf("%w: storage refused the batch: %w", sequencer.ErrFatal, cause)
		if code, h := Status(err); code != codes.Internal || h != http.StatusInternalServerError {
			t.Errorf("Status(%v) = %v, %d; want Internal, 500", err, code, h)
		}
	}
}
