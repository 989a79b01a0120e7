package ingest

import (
	"io"
	"net"
	"sync"
	"time"
)

// A request the port answers before reading its whole body — 413 for a
// declared length over the limit, a rejection from the headers alone —
// leaves the rest of the body on the way. fasthttp then closes the
// connection, and a close with unread input makes the kernel send a reset
// instead of a FIN: a client still writing the body gets "connection reset
// by peer" and never reads the answer (seen in the end-to-end hardening
// test with a 1 MiB body). net/http avoids it by closing its write side and
// waiting 500 ms before the close (its rstAvoidanceDelay); nginx by its
// lingering close. Lingering does the same for the webhook port: a
// connection closed with input still unread sends its FIN (the answer is
// already flushed), then reads and discards what keeps coming — for at
// most lingerTimeout and lingerBytes — before the close. A connection with
// nothing unread closes at once. At most maxLingering connections linger at
// a time; past that they close at once, as without it.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 4 << 20
	maxLingering  = 1024
)

// Lingering wraps the webhook port's listener so that its connections
// close as described above; Server's connections must come from it.
func Lingering(l net.Listener) net.Listener {
	return &lingeringListener{Listener: l, slots: make(chan struct{}, maxLingering)}
}

type lingeringListener struct {
	net.Listener
	slots chan struct{}
}

func (l *lingeringListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &lingeringConn{TCPConn: tc, slots: l.slots}, nil
	}
	return c, nil
}

type lingeringConn struct {
	*net.TCPConn
	slots chan struct{}
	once  sync.Once
}

func (c *lingeringConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		if !unreadInput(c.TCPConn) {
			err = c.TCPConn.Close()
			return
		}
		select {
		case c.slots <- struct{}{}:
		default: // too many lingering already
			err = c.TCPConn.Close()
			return
		}
		err = nil
		go func() {
			defer func() { <-c.slots }()
			_ = c.TCPConn.CloseWrite()
			_ = c.TCPConn.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.CopyN(io.Discard, c.TCPConn, lingerBytes)
			_ = c.TCPConn.Close()
		}()
	})
	return err
}
