//go:build !linux

package ipc

// roomFor is false where the send queue cannot be measured: TryWrite then
// never writes.
func (c *Conn) roomFor(int) bool { return false }
