package vectors

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

// RecordsEnv names the file the ingress conformance test appends the Kafka
// records it wrote to, one JSON line per accepted vector. The end-to-end
// conformance test produces exactly these records to the raw topic of a
// running pipeline: the ingress's output is checked against the vectors'
// verdicts in the ingress module, and what the normalizer makes of that very
// output is checked against the vectors' meaning on the normalized topic.
const RecordsEnv = "CLOSEDLOOP_CONFORMANCE_RECORDS"

// Record is one Kafka record the ingress wrote for a vector.
type Record struct {
	Vector  string   `json:"vector"`
	Key     []byte   `json:"key"`
	Value   []byte   `json:"value"`
	Headers []Header `json:"headers,omitempty"`
}

// Header is a Kafka record header.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// AppendRecord appends r to the file named by RecordsEnv; without it, it
// does nothing.
func AppendRecord(r Record) error {
	path := os.Getenv(RecordsEnv)
	if path == "" {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// ReadRecords reads a file AppendRecord wrote.
func ReadRecords(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}
