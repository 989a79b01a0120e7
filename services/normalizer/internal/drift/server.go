package drift

import (
	"context"
	"encoding/base64"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/closedloop/closedloop/libs/fault"
	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
)

// Server serves closedloop.admin.v1.SchemaDriftService from a Tracker.
type Server struct {
	adminv1.UnimplementedSchemaDriftServiceServer
	Tracker *Tracker
}

const (
	defaultPageSize = 500
	maxPageSize     = 5000
)

// ListSchemaDrift lists recorded paths, filtered and paged.
func (s *Server) ListSchemaDrift(ctx context.Context, req *adminv1.ListSchemaDriftRequest) (*adminv1.ListSchemaDriftResponse, error) {
	if req.EventType != "" && req.Provider == "" {
		return nil, fault.Errorf(fault.Invalid, "event_type needs a provider")
	}
	if strings.Contains(req.Provider, "/") {
		return nil, fault.Errorf(fault.Invalid, "provider must not contain '/'")
	}
	if req.PageSize < 0 {
		return nil, fault.Errorf(fault.Invalid, "page_size must not be negative")
	}
	size := int(req.PageSize)
	if size == 0 {
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	var after string
	if req.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.PageToken)
		if err != nil {
			return nil, fault.Errorf(fault.Invalid, "page_token is not one this service returned")
		}
		after = string(b)
	}
	all, err := s.Tracker.List(ctx, req.Provider, req.EventType)
	if err != nil {
		return nil, fault.Errorf(fault.Unavailable, "reading the recorded paths from Redis: %v", err)
	}
	resp := &adminv1.ListSchemaDriftResponse{}
	last := ""
	for _, p := range all {
		if after != "" && p.key() <= after {
			continue
		}
		if req.Since != nil && p.FirstSeen.Before(req.Since.AsTime()) || p.Baseline {
			continue // a type's baseline is not drift
		}
		if len(resp.Paths) == size {
			resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(last))
			break
		}
		resp.Paths = append(resp.Paths, &adminv1.SchemaPath{Provider: p.Provider, EventType: p.EventType, Path: p.Path,
			FirstEventId: p.FirstEventID, FirstSeenAt: timestamppb.New(p.FirstSeen)})
		last = p.key()
	}
	return resp, nil
}
