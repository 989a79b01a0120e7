//go:build !unix

package ingest

import "net"

// unreadInput cannot peek here: every connection lingers (bounded as on
// unix), which costs a closing connection its FIN's round trip at most.
func unreadInput(*net.TCPConn) bool { return true }
