package ipc

import (
	"errors"
	"fmt"
	"strconv"
)

// ClientHello performs the client side of the handshake: it sends
// hello{version: ProtocolVersion, client: name} and blocks until the
// server's answer arrives. It returns the answer header (owned by the
// caller; for a welcome it carries the server name and pool list) and:
//   - nil if the server welcomed this protocol version;
//   - a *VersionError (errors.As) if the server refused the version with
//     error{code:"version"} or welcomed a different version; the server
//     closes the connection after a refusal, and so should the caller;
//   - a *RemoteError if the server answered with another error code;
//   - an error wrapping ErrProtocol if the answer is neither welcome nor
//     error;
//   - any error of Write or Read.
//
// Set a deadline on the underlying connection to bound the wait.
func ClientHello(c *Conn, name string) (Header, error) {
	hello := Header{Type: TypeHello, Version: ProtocolVersion, Client: name}
	if err := c.Write(&hello, nil); err != nil {
		return Header{}, err
	}
	h, _, err := c.Read()
	if err != nil {
		return h, err
	}
	switch h.Type {
	case TypeWelcome:
		if h.Version != ProtocolVersion {
			return h, &VersionError{Client: ProtocolVersion, Server: h.Version, Message: "server welcomed a different version"}
		}
		return h, nil
	case TypeError:
		if h.Code == CodeVersion {
			return h, &VersionError{Client: ProtocolVersion, Message: h.Message}
		}
		return h, h.Err()
	default:
		return h, fmt.Errorf("%w: expected %q or %q in reply to hello, got %q", ErrProtocol, TypeWelcome, TypeError, h.Type)
	}
}

// ServerHello performs the server side of the handshake: it blocks until
// the client's first frame arrives and returns it (owned by the caller).
//
// If that frame is a hello with Version == ProtocolVersion, ServerHello
// sends welcome (with Type set to "welcome" and Version to ProtocolVersion;
// the caller fills Server and Pools) and returns the hello and the Write
// error, if any.
//
// Otherwise it answers error{code:"version", message: ...} (best effort)
// and returns a *VersionError (unsupported version) or an error wrapping
// ErrProtocol (first frame not a hello) or the *FrameError of an unreadable
// first frame. ServerHello never closes c: on any error the caller must
// close it. Set a deadline on the underlying connection to bound the wait.
func ServerHello(c *Conn, welcome Header) (Header, error) {
	h, _, err := c.Read()
	if err != nil {
		var fe *FrameError
		if errors.As(err, &fe) {
			refuse(c, "first frame is not a cgpool hello: "+fe.Error())
		}
		return h, err
	}
	if h.Type != TypeHello {
		refuse(c, "the first message must be hello, got "+strconv.Quote(h.Type))
		return h, fmt.Errorf("%w: first frame is %q, not %q", ErrProtocol, h.Type, TypeHello)
	}
	if h.Version != ProtocolVersion {
		refuse(c, "unsupported protocol version "+strconv.Itoa(h.Version)+
			"; this server speaks version "+strconv.Itoa(ProtocolVersion))
		return h, &VersionError{Client: h.Version, Server: ProtocolVersion}
	}
	welcome.Type = TypeWelcome
	welcome.Version = ProtocolVersion
	return h, c.Write(&welcome, nil)
}

func refuse(c *Conn, msg string) {
	_ = c.Write(&Header{Type: TypeError, Code: CodeVersion, Message: msg}, nil)
}
