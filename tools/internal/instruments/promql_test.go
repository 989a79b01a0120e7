package instruments

import (
	"slices"
	"testing"
)

func TestMetricsInFindsTheSelectedSeriesOnly(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (source, status) (rate(closedloop_ingress_requests_total{status=~"5.."}[5m])) / on (source) group_left clamp_min(sum by (source) (rate(closedloop_ingress_requests_total[5m])), 1e-9) > 0.05`: {"closedloop_ingress_requests_total"},
		`histogram_quantile(0.99, sum by (le, stage) (rate(closedloop_freshness_seconds_bucket{destination=~"$destination"}[$__rate_interval])))`:                                                             {"closedloop_freshness_seconds_bucket"},
		`closedloop:ingress_errors:ratio_rate1h > (14.4 * 0.001) and up{closedloop_service="ingress"} == 0`:                                                                                                   {"closedloop:ingress_errors:ratio_rate1h", "up"},
		`absent(up{closedloop_service="ingress"} == 1) or vector(0)`:                                                                                                                                          {"up"},
		`max by (sink, destination) (closedloop_sink_breaker_state) == 1`:                                                                                                                                     {"closedloop_sink_breaker_state"},
	} {
		if got := MetricsIn(expr); !slices.Equal(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", expr, got, want)
		}
	}
}
