package kafkaio

import (
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/propagation"
)

// HeaderCarrier adapts record headers to an OpenTelemetry TextMapCarrier so
// that W3C traceparent/tracestate travel with a record.
type HeaderCarrier struct{ Headers *[]kafka.Header }

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the value of the last header with the key.
func (c HeaderCarrier) Get(key string) string {
	h := *c.Headers
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Key == key {
			return string(h[i].Value)
		}
	}
	return ""
}

// Set replaces every header with the key by one with the value.
func (c HeaderCarrier) Set(key, value string) {
	h := (*c.Headers)[:0]
	for _, x := range *c.Headers {
		if x.Key != key {
			h = append(h, x)
		}
	}
	*c.Headers = append(h, kafka.Header{Key: key, Value: []byte(value)})
}

// Keys lists the header keys.
func (c HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(*c.Headers))
	for _, h := range *c.Headers {
		out = append(out, h.Key)
	}
	return out
}

// Header returns the value of the named header of a record, or "".
func Header(m kafka.Message, key string) string {
	return HeaderCarrier{Headers: &m.Headers}.Get(key)
}
