package fault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The one mapping, as a table: every kind has its gRPC code and HTTP status,
// through wrapping, and foreign errors are mapped without reading messages.
func TestMapping(t *testing.T) {
	base := errors.New("required word in the message changes nothing")
	for _, tc := range []struct {
		err  error
		kind Kind
		grpc codes.Code
		http int
	}{
		{Errorf(Invalid, "dead letter id %q is not <sink>/<partition>/<offset>", "x"), Invalid, codes.InvalidArgument, 400},
		{fmt.Errorf("ctx: %w", Errorf(NotFound, "no such job")), NotFound, codes.NotFound, 404},
		{Wrap(Unavailable, base), Unavailable, codes.Unavailable, 503},
		{Wrap(Conflict, base), Conflict, codes.FailedPrecondition, 409},
		{Wrap(Denied, base), Denied, codes.PermissionDenied, 403},
		{Wrap(Unauthenticated, base), Unauthenticated, codes.Unauthenticated, 401},
		{Wrap(TooLarge, base), TooLarge, codes.InvalidArgument, http.StatusRequestEntityTooLarge},
		{Wrap(RateLimited, base), RateLimited, codes.ResourceExhausted, 429},
		{Wrap(Partial, base), Partial, codes.DataLoss, 500},
		{Wrap(Unavailable, Errorf(Invalid, "inner")), Unavailable, codes.Unavailable, 503}, // outermost wins
		{base, Internal, codes.Internal, 500},
		{status.Error(codes.NotFound, "from another service"), NotFound, codes.NotFound, 404},
	} {
		if got := KindOf(tc.err); got != tc.kind {
			t.Errorf("%v: kind %v, want %v", tc.err, got, tc.kind)
		}
		if got := status.Code(GRPC(tc.err)); got != tc.grpc {
			t.Errorf("%v: gRPC %v, want %v", tc.err, got, tc.grpc)
		}
		if got := status.Code(tc.err); tc.kind != Internal && got != tc.grpc {
			t.Errorf("%v: status.Code of the fault itself %v, want %v", tc.err, got, tc.grpc)
		}
		if got := HTTPStatus(tc.err); got != tc.http {
			t.Errorf("%v: HTTP %d, want %d", tc.err, got, tc.http)
		}
	}
	for k := Internal; k <= Partial; k++ {
		if _, ok := table[k]; !ok || k.String() == "" {
			t.Errorf("kind %d has no row in the table", k)
		}
	}
	if status.Code(GRPC(context.DeadlineExceeded)) != codes.DeadlineExceeded || GRPC(nil) != nil || Wrap(Invalid, nil) != nil {
		t.Error("context errors or nil mapped wrongly")
	}
}
