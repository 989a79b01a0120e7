package api

import (
	"context"

	adminv1 "github.com/closedloop/closedloop/proto/gen/go/closedloop/admin/v1"
	"github.com/closedloop/closedloop/services/admin/internal/backfill"
)

// BackfillServer serves BackfillService over the jobs.
type BackfillServer struct {
	adminv1.UnimplementedBackfillServiceServer
	Jobs *backfill.Jobs
}

// StartBackfill implements BackfillService.
func (b *BackfillServer) StartBackfill(ctx context.Context, req *adminv1.StartBackfillRequest) (*adminv1.StartBackfillResponse, error) {
	job, err := b.Jobs.Start(ctx, req, adminv1.BackfillKind_BACKFILL_KIND_BACKFILL, CallerOf(ctx).Name)
	if err != nil {
		return nil, err
	}
	return &adminv1.StartBackfillResponse{Job: job}, nil
}

// ListBackfills implements BackfillService.
func (b *BackfillServer) ListBackfills(_ context.Context, req *adminv1.ListBackfillsRequest) (*adminv1.ListBackfillsResponse, error) {
	return &adminv1.ListBackfillsResponse{Jobs: b.Jobs.List(req.Source)}, nil
}

// WatchBackfill implements BackfillService.
func (b *BackfillServer) WatchBackfill(req *adminv1.WatchBackfillRequest, stream adminv1.BackfillService_WatchBackfillServer) error {
	return b.Jobs.Watch(stream.Context(), req.Id, func(job *adminv1.BackfillJob) error {
		return stream.Send(&adminv1.WatchBackfillResponse{Job: job})
	})
}

// CancelBackfill implements BackfillService.
func (b *BackfillServer) CancelBackfill(_ context.Context, req *adminv1.CancelBackfillRequest) (*adminv1.CancelBackfillResponse, error) {
	job, err := b.Jobs.Cancel(req.Id)
	if err != nil {
		return nil, err
	}
	return &adminv1.CancelBackfillResponse{Job: job}, nil
}
