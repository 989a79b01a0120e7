module github.com/closedloop/closedloop/tools

go 1.26.0

require (
	github.com/closedloop/closedloop/libs v0.0.0
	github.com/closedloop/closedloop/proto/gen/go v0.0.0
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/twmb/franz-go v1.22.2 // indirect
	github.com/twmb/franz-go/pkg/kfake v0.0.0-20260918054303-01f206a7e32c // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.15.0 // indirect
)

replace (
	github.com/closedloop/closedloop/libs => ../libs
	github.com/closedloop/closedloop/proto/gen/go => ../proto/gen/go
)
