package kafkaio

import (
	"context"
)

// Pause stops handing records to the handler (by hand: an operator's
// valve): each partition worker waits before its next batch, the reader's
// small queue fills, and Kafka holds the rest. In-flight batches finish.
func (c *Consumer) Pause(reason string) {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if c.paused == nil {
		c.resumed = make(chan struct{})
	}
	c.paused = &reason
}

// Resume undoes Pause.
func (c *Consumer) Resume() {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if c.paused != nil {
		close(c.resumed)
		c.paused = nil
	}
}

// Paused reports whether the consumer is paused, and why.
func (c *Consumer) Paused() (string, bool) {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	if c.paused == nil {
		return "", false
	}
	return *c.paused, true
}

// waitResumed blocks while paused, until Resume or stop.
func (c *Consumer) waitResumed(stop context.Context) error {
	c.pauseMu.Lock()
	ch := c.resumed
	paused := c.paused != nil
	c.pauseMu.Unlock()
	if !paused {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-stop.Done():
		return stop.Err()
	}
}
