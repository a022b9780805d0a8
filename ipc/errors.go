package ipc

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Sentinel errors. Functions of this package wrap them with context, so test
// for them with errors.Is, never with ==.
var (
	// ErrFrameTooLarge is wrapped by every [*FrameError] about a size limit
	// (header longer than [MaxHeader], payload longer than the Conn's
	// MaxPayload). The frame was not read (or not written); on the read side
	// the stream is no longer in sync and the connection must be closed.
	ErrFrameTooLarge = errors.New("ipc: frame too large")

	// ErrClosed is returned by [Conn.Read], [Conn.Write] and
	// [Conn.WriteBatch] after [Conn.Close] was called. It is net.ErrClosed,
	// so errors.Is(err, net.ErrClosed) holds as well.
	ErrClosed = net.ErrClosed

	// ErrProtocol is wrapped when a peer sends a well-formed frame that is
	// not allowed at that point of the conversation, for example a first
	// frame that is not hello, or a reply to hello that is neither welcome
	// nor error.
	ErrProtocol = errors.New("ipc: protocol violation")

	// ErrInvalidRequest is wrapped by [Header.ValidateRequest] when a request
	// header has a missing or out-of-range field. A server answers such a
	// submit with rejected{reason: "invalid"}, other requests with
	// error{code: "invalid"}.
	ErrInvalidRequest = errors.New("ipc: invalid request")

	// ErrUnsafeDir is wrapped by the [*ListenError] returned by [Listen] when
	// the socket's parent directory is not a directory, is writable by group
	// or others (sticky bit or not), or is owned by a user other than the
	// server's effective user and root.
	ErrUnsafeDir = errors.New("ipc: unsafe socket directory")

	// ErrNotSocket is wrapped by the [*ListenError] returned by [Listen] when
	// something other than a unix socket (a regular file, a directory, a
	// symlink, ...) exists at the socket path. Listen never removes it.
	ErrNotSocket = errors.New("ipc: path exists and is not a socket")

	// ErrSocketInUse is wrapped by the [*ListenError] returned by [Listen]
	// when a server accepts connections on the socket path already. Listen
	// never removes a live socket.
	ErrSocketInUse = errors.New("ipc: socket in use by a live server")
)

// Reasons carried by [FrameError.Reason].
const (
	// FrameHeaderTooLarge: header length > MaxHeader (wraps ErrFrameTooLarge).
	FrameHeaderTooLarge = "header too large"
	// FramePayloadTooLarge: payload length > MaxPayload (wraps ErrFrameTooLarge).
	FramePayloadTooLarge = "payload too large"
	// FrameEmptyHeader: header length 0.
	FrameEmptyHeader = "empty header"
	// FrameBadHeader: header is not a JSON object with a non-empty string
	// "type" member (or, on write, could not be encoded).
	FrameBadHeader = "bad header"
)

// FrameError reports a frame that breaks the framing rules: a length over a
// limit, a zero header length, or a header that is not a JSON object with a
// non-empty string "type". Use errors.As to get it. After a FrameError from
// [Conn.Read] the byte stream can no longer be trusted (for size errors the
// oversized frame was not consumed); the caller should close the connection,
// optionally after sending an error frame. A FrameError from [Conn.Write]
// means nothing was written and the Conn is still usable.
type FrameError struct {
	// Reason is one of FrameHeaderTooLarge, FramePayloadTooLarge,
	// FrameEmptyHeader, FrameBadHeader.
	Reason string
	// Size is the offending length in bytes (header or payload length), or
	// 0 when not applicable.
	Size int64
	// Limit is the limit that Size broke, or 0 when not applicable.
	Limit int64
	// Err is the underlying cause: ErrFrameTooLarge for size problems, the
	// JSON error for a bad header, or nil.
	Err error
}

func (e *FrameError) Error() string {
	s := "ipc: " + e.Reason
	if e.Limit > 0 {
		s += " (" + strconv.FormatInt(e.Size, 10) + " > " + strconv.FormatInt(e.Limit, 10) + " bytes)"
	}
	if e.Err != nil && e.Err != ErrFrameTooLarge {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns e.Err.
func (e *FrameError) Unwrap() error { return e.Err }

// VersionError reports that client and server do not share a protocol
// version. [ClientHello] returns it when the server refuses the client's
// version (error{code:"version"}) or welcomes it with a different version;
// [ServerHello] returns it when the client's hello asks for an unsupported
// version. Use errors.As to get it.
type VersionError struct {
	// Client is the version the client asked for in its hello.
	Client int
	// Server is the version the server speaks, or 0 if unknown (the server
	// refused without saying).
	Server int
	// Message is the server's human-readable message from the error frame,
	// if any.
	Message string
}

func (e *VersionError) Error() string {
	s := "ipc: protocol version mismatch: client speaks " + strconv.Itoa(e.Client)
	if e.Server != 0 {
		s += ", server speaks " + strconv.Itoa(e.Server)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// RemoteError is an error frame (type "error") received from the peer,
// turned into a Go error by [Header.Err] and [ClientHello].
type RemoteError struct {
	// ID is the id of the request the error answers (0 if none).
	ID uint64
	// Code is the machine-readable code, e.g. CodeInvalid.
	Code string
	// Message is the human-readable text.
	Message string
}

func (e *RemoteError) Error() string {
	s := "ipc: remote error"
	if e.ID != 0 {
		s += " (id " + strconv.FormatUint(e.ID, 10) + ")"
	}
	if e.Code != "" {
		s += " [" + e.Code + "]"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// ListenError is returned by [Listen] when it refuses to create the socket
// for a hygiene reason. Err is one of ErrUnsafeDir, ErrNotSocket,
// ErrSocketInUse (test with errors.Is) or, for unexpected failures while
// checking, the underlying system error.
type ListenError struct {
	// Path is the socket path given to Listen.
	Path string
	// Reason explains, for a human, why Listen refused and what to do.
	Reason string
	// Err is the sentinel or underlying error.
	Err error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("ipc: listen %s: %s", e.Path, e.Reason)
}

// Unwrap returns e.Err.
func (e *ListenError) Unwrap() error { return e.Err }
