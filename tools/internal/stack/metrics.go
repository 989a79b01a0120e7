package stack

import (
	"fmt"
	"io"
	"net/http"
	"os"
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

// FetchProfile saves what url serves (a pprof endpoint) to path.
func FetchProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// ParseCounts reads a comma-separated list of positive counts ("1,2,3").
func ParseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			return nil, fmt.Errorf("%q is not a list of counts like 1,2,3", s)
		}
		out = append(out, k)
	}
	return out, nil
}
