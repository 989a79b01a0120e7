package kafkaio

type partKey struct {
	topic     string
	partition int
}

func (c *Consumer) setLag(k partKey, lag int64) {
	if lag < 0 {
		lag = 0
	}
	c.lagMu.Lock()
	c.lag[k] = lag
	c.lagMu.Unlock()
	if s := c.stats[k.topic]; s != nil {
		s.Lag.Store(c.lagByTopic()[k.topic])
	}
}

func (c *Consumer) lagByTopic() map[string]int64 {
	c.lagMu.Lock()
	defer c.lagMu.Unlock()
	out := map[string]int64{}
	for k, v := range c.lag {
		out[k.topic] += v
	}
	return out
}
