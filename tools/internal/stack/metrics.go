package stack

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Metrics is one scrape of a Prometheus /metrics page: value by series.
type Metrics map[string]float64

// Scrape reads a /metrics URL once (empty when it cannot).
func Scrape(url string) Metrics {
	m := Metrics{}
	resp, err := http.Get(url)
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		m[f[0]] = v
	}
	return m
}

// Sum is the sum over all series of a counter or gauge named name.
func (m Metrics) Sum(name string) float64 {
	var sum float64
	for series, v := range m {
		if series == name || strings.HasPrefix(series, name+"{") {
			sum += v
		}
	}
	return sum
}

// SumCount is a histogram's _count and _sum over all its series.
func (m Metrics) SumCount(name string) (count, sum float64) {
	return m.Sum(name + "_count"), m.Sum(name + "_sum")
}

// MetricSumCount reads a Prometheus histogram's _count and _sum (all series)
// from a /metrics URL (0, 0 when it cannot).
func MetricSumCount(url, name string) (count, sum float64) { return Scrape(url).SumCount(name) }

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
