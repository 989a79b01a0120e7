// Package kafkaio is closedloop's Kafka I/O on github.com/segmentio/kafka-go:
//
//   - Producer: synchronous, acks=all, murmur2 hash of the record key (the
//     partitioner of the Java client, so other producers agree on where a
//     subject lives), one request per broker for every partition's records
//     and no batch timer (Batcher is the same engine for many concurrent
//     callers), and a "send <topic>" span per record whose W3C trace
//     context rides in the headers;
//   - Consumer: a consumer-group loop (kafka-go's ConsumerGroup for the
//     membership, one fetch per broker for all its partitions) that hands
//     records of one partition to the handler in order, commits an offset only after the
//     handler returned nil, retries dependency failures with backoff (the
//     partition waits; nothing is skipped), and sends records the handler
//     marks Permanent (or that make it panic) to a quarantine topic with the
//     reason, so one bad record never blocks its partition;
//   - Topics: configurable names with a prefix, and a start-up check that they
//     exist (or their creation, when asked).
//
// Fetch, Produce, and the Metadata and ListOffsets they need, go over
// connections of this package's own (wire.go: Fetch and Produce
// hand-encoded, record batches decoded from one reused buffer); the
// handshake (TLS, SASL), the group's requests and the admin ones are
// kafka-go's.
package kafkaio
