package kafkaio

// partKey is a topic's partition.
type partKey struct {
	topic     string
	partition int
}

// setLag records a partition's lag as of the record just fetched (its high
// watermark minus its offset) and the topic's sum in the status.
func (c *Consumer) setLag(k partKey, lag int64) {
	if lag < 0 {
		lag = 0
	}
	c.lagMu.Lock()
	c.lag[k] = lag
	var sum int64
	for pk, v := range c.lag {
		if pk.topic == k.topic {
			sum += v
		}
	}
	c.lagMu.Unlock()
	if s := c.stats[k.topic]; s != nil {
		s.Lag.Store(sum)
	}
}

// lagByPartition is a copy of the partitions' lags.
func (c *Consumer) lagByPartition() map[partKey]int64 {
	c.lagMu.Lock()
	defer c.lagMu.Unlock()
	out := make(map[partKey]int64, len(c.lag))
	for k, v := range c.lag {
		out[k] = v
	}
	return out
}

// assigned starts a generation's lag: only its partitions, none behind
// until their first fetch (a partition that moved to another member is no
// longer this instance's to report).
func (c *Consumer) assigned(parts []*partState) {
	c.lagMu.Lock()
	clear(c.lag)
	for _, p := range parts {
		c.lag[p.key] = 0
	}
	c.lagMu.Unlock()
	for _, s := range c.stats {
		s.Lag.Store(0)
	}
}
