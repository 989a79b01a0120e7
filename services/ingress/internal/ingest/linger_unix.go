//go:build unix

package ingest

import (
	"net"
	"syscall"
)

// unreadInput reports whether input has arrived on c that nobody read: a
// peek of one byte that does not wait. It runs under Control, not Read, so
// that it never waits for a Read in progress elsewhere (fasthttp closes
// idle connections from another goroutine while their worker waits in
// Read).
func unreadInput(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	pending := false
	var b [1]byte
	_ = rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		pending = err == nil && n > 0
	})
	return pending
}
