package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tlog-dev/tlog/pkg/checkpoint"
	"github.com/tlog-dev/tlog/pkg/receipt"
	"github.com/tlog-dev/tlog/pkg/tile"
	"github.com/tlog-dev/tlog/pkg/tree"
	"github.com/tlog-dev/tlog/server/auth"
	"github.com/tlog-dev/tlog/server/sequencer"
	"github.com/tlog-dev/tlog/storage"
)

// errorCodes is the one table from domain errors to status codes. The first
// match wins, so more specific errors come first.
var errorCodes = []struct {
	err  error
	code codes.Code
	http int
}{
	{context.Canceled, codes.Canceled, 499},
	{context.DeadlineExceeded, codes.DeadlineExceeded, http.StatusGatewayTimeout},
	{auth.ErrUnauthenticated, codes.Unauthenticated, http.StatusUnauthorized},
	{auth.ErrPermissionDenied, codes.PermissionDenied, http.StatusForbidden},
	{ErrLogStopped, codes.FailedPrecondition, http.StatusInternalServerError}, // before the causes it wraps
	{ErrRateLimited, codes.ResourceExhausted, http.StatusTooManyRequests},
	{ErrTooLarge, codes.ResourceExhausted, http.StatusRequestEntityTooLarge},
	{storage.ErrLogNotFound, codes.NotFound, http.StatusNotFound},
	{storage.ErrNotFound, codes.NotFound, http.StatusNotFound},
	{storage.ErrLogExists, codes.AlreadyExists, http.StatusConflict},
	{ErrInvalidArgument, codes.InvalidArgument, http.StatusBadRequest},
	{sequencer.ErrNoEntries, codes.InvalidArgument, http.StatusBadRequest},
	{sequencer.ErrEmptyEntry, codes.InvalidArgument, http.StatusBadRequest},
	{sequencer.ErrEntryTooLarge, codes.InvalidArgument, http.StatusRequestEntityTooLarge},
	{checkpoint.ErrMalformed, codes.InvalidArgument, http.StatusBadRequest},
	{checkpoint.ErrSignature, codes.InvalidArgument, http.StatusBadRequest},
	{checkpoint.ErrOrigin, codes.InvalidArgument, http.StatusBadRequest},
	{receipt.ErrMalformed, codes.InvalidArgument, http.StatusBadRequest},
	{tile.ErrInvalidPath, codes.InvalidArgument, http.StatusBadRequest},
	{ErrOutOfRange, codes.OutOfRange, http.StatusBadRequest},
	{tree.ErrIndexOutOfRange, codes.OutOfRange, http.StatusBadRequest},
	{tree.ErrSizeOutOfRange, codes.InvalidArgument, http.StatusBadRequest},
	{sequencer.ErrPushback, codes.ResourceExhausted, http.StatusServiceUnavailable},
	{ErrNoWitnessPolicy, codes.FailedPrecondition, http.StatusNotFound},
	{sequencer.ErrClosed, codes.Unavailable, http.StatusServiceUnavailable},
	{ErrNotLeader, codes.Unavailable, http.StatusServiceUnavailable},
	{sequencer.ErrUnavailable, codes.Unavailable, http.StatusServiceUnavailable},
	{storage.ErrSchemaTooNew, codes.FailedPrecondition, http.StatusInternalServerError},
	{storage.ErrConflict, codes.Aborted, http.StatusConflict},
	{storage.ErrInvalid, codes.Internal, http.StatusInternalServerError},
	{storage.ErrDuplicate, codes.Internal, http.StatusInternalServerError}, // reaches callers only when storage disagrees with a lookup
	{tree.ErrMissingTile, codes.Internal, http.StatusInternalServerError},
}

// Status maps an error to its gRPC code and HTTP status. Errors that are
// none of the domain errors are storage or network failures: Unavailable.
func Status(err error) (codes.Code, int) {
	if err == nil {
		return codes.OK, http.StatusOK
	}
	if s, ok := status.FromError(err); ok {
		// A status from another process (a forwarded append).
		return s.Code(), httpStatusOf(s.Code())
	}
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return e.code, e.http
		}
	}
	return codes.Unavailable, http.StatusServiceUnavailable
}

// pushbackRetry is how long a client should wait after pushback.
const pushbackRetry = 100 * time.Millisecond

// GRPCError turns a domain error into a gRPC status error with the same
// message.
func GRPCError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, _ := Status(err)
	st := status.New(code, err.Error())
	// RetryInfo tells clients which ResourceExhausted errors are worth
	// retrying (pushback, rate limits) and which are not (limits).
	var wait time.Duration
	var rl *RateLimitError
	switch {
	case errors.As(err, &rl):
		wait = rl.Wait
	case errors.Is(err, sequencer.ErrPushback):
		wait = pushbackRetry
	}
	if wait > 0 {
		if d, e := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); e == nil {
			st = d
		}
	}
	return st.Err()
}

// httpStatusOf maps the gRPC code of an error from another process (a
// forwarded append) to an HTTP status.
func httpStatusOf(c codes.Code) int {
	switch c {
	case codes.Canceled:
		return 499
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
