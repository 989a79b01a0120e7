package stack

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// MetricSumCount reads a Prometheus histogram's _count and _sum over all its
// series from a /metrics URL (0, 0 when it cannot).
func MetricSumCount(url, name string) (count, sum float64) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.HasPrefix(f[0], name+"_count"):
			count += v
		case strings.HasPrefix(f[0], name+"_sum"):
			sum += v
		}
	}
	return count, sum
}

// MetricSum reads the sum over all series of a Prometheus counter or gauge
// named name from a /metrics URL (0 when it cannot).
func MetricSum(url, name string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || !(f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		sum += v
	}
	return sum
}
