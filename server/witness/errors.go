package witness

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// The errors of AddCheckpoint. Each maps to one HTTP status code of
// c2sp.org/tlog-witness (see StatusCode).
var (
	// ErrMalformed: the request is not a well-formed add-checkpoint body,
	// its checkpoint text is not a valid checkpoint, or the old size is
	// larger than the checkpoint size (400 Bad Request).
	ErrMalformed = errors.New("malformed request")
	// ErrUnknownLog: the checkpoint's origin is not a configured log
	// (404 Not Found).
	ErrUnknownLog = errors.New("unknown log")
	// ErrSignature: the checkpoint has no valid signature by a key trusted
	// for its origin, or a signature by a trusted key fails to verify
	// (403 Forbidden).
	ErrSignature = errors.New("no valid log signature")
	// ErrInconsistent: the checkpoint is not consistent with the one the
	// witness cosigned last, or breaks a rule on the empty tree
	// (422 Unprocessable Entity). It may be evidence of a forked log.
	ErrInconsistent = errors.New("inconsistent checkpoint")
)

// ConflictError is returned by AddCheckpoint when the request's old size is
// not the size of the latest checkpoint the witness cosigned for the log
// (409 Conflict). Size is that size, 0 if the witness never cosigned one.
type ConflictError struct {
	Size uint64
}

func (e *ConflictError) Error() string {
	return "old size does not match the latest cosigned size " + strconv.FormatUint(e.Size, 10)
}

// malformed returns an error wrapping ErrMalformed.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// inconsistent returns an error wrapping ErrInconsistent.
func inconsistent(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInconsistent, fmt.Sprintf(format, args...))
}

// StatusCode returns the HTTP status code for an error of AddCheckpoint, as
// c2sp.org/tlog-witness specifies it, and 500 for any other error.
func StatusCode(err error) int {
	var conflict *ConflictError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &conflict):
		return http.StatusConflict
	case errors.Is(err, ErrMalformed):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnknownLog):
		return http.StatusNotFound
	case errors.Is(err, ErrSignature):
		return http.StatusForbidden
	case errors.Is(err, ErrInconsistent):
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}
