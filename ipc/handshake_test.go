package ipc

import (
	"errors"
	"net"
	"slices"
	"testing"
)

func pipeConns(t *testing.T) (client, server *Conn) {
	t.Helper()
	a, b := net.Pipe()
	client, server = NewConn(a), NewConn(b)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

type helloResult struct {
	h   Header
	err error
}

func TestHandshakeGoodVersion(t *testing.T) {
	client, server := pipeConns(t)
	done := make(chan helloResult, 1)
	go func() {
		h, err := ServerHello(server, Header{Server: "cgpool/test", Pools: []string{"default", "exec"}})
		done <- helloResult{h, err}
	}()
	w, err := ClientHello(client, "test-client")
	if err != nil {
		t.Fatalf("ClientHello: %v", err)
	}
	if w.Type != TypeWelcome || w.Version != ProtocolVersion || w.Server != "cgpool/test" || !slices.Equal(w.Pools, []string{"default", "exec"}) {
		t.Fatalf("welcome: %+v", w)
	}
	r := <-done
	if r.err != nil || r.h.Type != TypeHello || r.h.Client != "test-client" || r.h.Version != ProtocolVersion {
		t.Fatalf("ServerHello: %+v %v", r.h, r.err)
	}
}

func TestServerHelloBadVersion(t *testing.T) {
	client, server := pipeConns(t)
	done := make(chan helloResult, 1)
	go func() {
		h, err := ServerHello(server, Header{Server: "s"})
		done <- helloResult{h, err}
	}()
	if err := client.Write(&Header{Type: TypeHello, Version: 2, Client: "future"}, nil); err != nil {
		t.Fatal(err)
	}
	h, _, err := client.Read()
	if err != nil || h.Type != TypeError || h.Code != CodeVersion || h.Message == "" {
		t.Fatalf("client got %+v %v", h, err)
	}
	r := <-done
	var ve *VersionError
	if !errors.As(r.err, &ve) || ve.Client != 2 || ve.Server != ProtocolVersion {
		t.Fatalf("ServerHello error %v", r.err)
	}
	if r.h.Client != "future" {
		t.Fatalf("ServerHello should return the hello it read: %+v", r.h)
	}
}

func TestServerHelloNotHello(t *testing.T) {
	client, server := pipeConns(t)
	done := make(chan helloResult, 1)
	go func() {
		h, err := ServerHello(server, Header{})
		done <- helloResult{h, err}
	}()
	if err := client.Write(&Header{Type: TypeSubmit, ID: 1}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	h, _, err := client.Read()
	if err != nil || h.Type != TypeError || h.Code != CodeVersion {
		t.Fatalf("client got %+v %v", h, err)
	}
	if r := <-done; !errors.Is(r.err, ErrProtocol) {
		t.Fatalf("ServerHello error %v", r.err)
	}
}

func TestServerHelloGarbage(t *testing.T) {
	client, server := pipeConns(t)
	done := make(chan helloResult, 1)
	go func() {
		h, err := ServerHello(server, Header{})
		done <- helloResult{h, err}
	}()
	// An HTTP client, say: the "header length" is huge.
	raw := client.rw.(net.Conn)
	go raw.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	h, _, err := client.Read()
	if err != nil || h.Type != TypeError || h.Code != CodeVersion {
		t.Fatalf("client got %+v %v", h, err)
	}
	var fe *FrameError
	if r := <-done; !errors.As(r.err, &fe) {
		t.Fatalf("ServerHello error %v", r.err)
	}
}

// fakeServer reads the client's hello and answers with reply.
func fakeServer(server *Conn, reply Header) {
	go func() {
		if _, _, err := server.Read(); err == nil {
			server.Write(&reply, nil)
		}
	}()
}

func TestClientHelloRefused(t *testing.T) {
	client, server := pipeConns(t)
	fakeServer(server, Header{Type: TypeError, Code: CodeVersion, Message: "this server speaks version 7"})
	_, err := ClientHello(client, "c")
	var ve *VersionError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v (%T), want *VersionError", err, err)
	}
	if ve.Client != ProtocolVersion || ve.Message != "this server speaks version 7" {
		t.Fatalf("VersionError %+v", ve)
	}
}

func TestClientHelloWrongWelcomeVersion(t *testing.T) {
	client, server := pipeConns(t)
	fakeServer(server, Header{Type: TypeWelcome, Version: 3})
	_, err := ClientHello(client, "c")
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Server != 3 {
		t.Fatalf("got %v, want *VersionError with Server 3", err)
	}
}

func TestClientHelloOtherReplies(t *testing.T) {
	client, server := pipeConns(t)
	fakeServer(server, Header{Type: TypeError, Code: CodeInternal, Message: "sorry"})
	_, err := ClientHello(client, "c")
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeInternal {
		t.Fatalf("got %v, want *RemoteError", err)
	}

	client, server = pipeConns(t)
	fakeServer(server, Header{Type: TypeOK})
	if _, err := ClientHello(client, "c"); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
}
