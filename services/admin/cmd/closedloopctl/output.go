package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// emit prints m as -o asks: json and yaml print the message itself (field
// names as in the proto), table calls table.
func (c *cli) emit(m proto.Message, table func(w *tabwriter.Writer)) error {
	switch c.output {
	case "json":
		b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true, EmitUnpopulated: false}.Marshal(m)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.out, string(b))
		return nil
	case "yaml":
		b, err := toYAML(m)
		if err != nil {
			return err
		}
		_, err = c.out.Write(b)
		return err
	}
	if table == nil {
		return nil
	}
	w := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

// structured reports whether the output is for programs (json or yaml):
// no prose, no progress.
func (c *cli) structured() bool { return c.output != "table" }

// toYAML renders m as YAML with the field order of its JSON form (JSON is
// YAML: decoded into a node, it keeps the order; the flow style is
// dropped for block style).
func toYAML(m proto.Message) ([]byte, error) {
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(j, &n); err != nil {
		return nil, err
	}
	block(&n)
	var sb strings.Builder
	enc := yaml.NewEncoder(&sb)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	return []byte(sb.String()), enc.Close()
}

func block(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle
	if n.Kind == yaml.ScalarNode && n.Style&yaml.DoubleQuotedStyle != 0 && n.Tag == "!!str" {
		n.Style &^= yaml.DoubleQuotedStyle // the encoder quotes where YAML needs it
	}
	for _, k := range n.Content {
		block(k)
	}
}

func ago(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	d := time.Since(ts.AsTime())
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return ts.AsTime().UTC().Format("2006-01-02 15:04")
}

func short(enum fmt.Stringer, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(enum.String(), prefix))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// parseWhen is a duration back from now (2h) or an RFC 3339 time.
func parseWhen(flag, v string) (*timestamppb.Timestamp, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return timestamppb.New(time.Now().Add(-d)), nil
	}
	if at, err := time.Parse(time.RFC3339, v); err == nil {
		return timestamppb.New(at), nil
	}
	return nil, usagef("--%s %q is neither a duration (2h) nor an RFC 3339 time", flag, v)
}
