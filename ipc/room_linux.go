package ipc

import "golang.org/x/sys/unix"

// roomFor reports whether the socket's send buffer can take n more bytes
// without the write blocking: a write blocks only when the bytes queued
// and not yet read (SIOCOUTQ) reach the send buffer size (SO_SNDBUF), so
// queued + n + slack below it is safe. Called with wmu held.
func (c *Conn) roomFor(n int) bool {
	var queued int
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		if c.sndbuf == 0 {
			c.sndbuf, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
			if err != nil {
				return
			}
		}
		queued, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
	})
	return cerr == nil && err == nil && queued+n+tryWriteSlack < c.sndbuf
}
