// Package ipc owns cgpool's wire formats: the client protocol (client <->
// supervisor over a unix socket) and the worker protocol (supervisor <->
// worker process over an inherited socketpair on fd 3). The normative
// description, meant for implementers in other languages (the Python client
// needs only struct and json), is docs/protocol.md; this package is the Go
// implementation of it.
//
// # What it owns
//
//   - Framing, shared by both protocols: a 4-byte big-endian header length
//     H, a 4-byte big-endian payload length P, H bytes of UTF-8 JSON object
//     header with a non-empty string "type", P bytes of opaque payload.
//     [Conn] reads and writes frames; [Header] is the single flat header
//     struct; the Type*, Reject*, Process*, Cancel*, State* and Code*
//     constants name the message types and enumerated values.
//   - Limits: H in 1..[MaxHeader] (64 KiB, fixed), P in 0..MaxPayload (per
//     Conn, [DefaultMaxPayload] 64 MiB). Violations are [*FrameError]s,
//     checked before anything of the announced size is allocated.
//   - The version check of the handshake: [ClientHello], [ServerHello],
//     [ProtocolVersion], [*VersionError].
//   - Socket hygiene for the supervisor's listening socket: [Listen] (safe
//     parent directory, stale-socket cleanup that never removes a live
//     socket, mode applied before listen), [Listener.Accept] (peer
//     credential filter), [PeerCred].
//   - Structural validation of client requests: [Header.ValidateRequest].
//
// # What it does not own
//
// It does not interpret payloads (task input and output, pickled
// exceptions), keep per-connection state (which ids are live, which
// messages are allowed when, beyond the first hello), queue or schedule
// tasks, start workers or manage cgroups, or decide the contents of
// stats/status documents (opaque json.RawMessage here). It starts no
// goroutines and sets no deadlines: callers set deadlines on the
// underlying connection. It imports no other package of cgpool.
//
// # Concurrency
//
// A [Conn] allows one reader goroutine at a time and any number of
// concurrent writers (Write and WriteBatch serialize on a mutex, encoding
// happens outside it); Close may be called concurrently with everything.
// A [Listener] is safe for concurrent use. [Header] values are plain data:
// the Conn never retains them or the payload slices passed to or returned
// from it. Package-level functions hold no shared state.
package ipc
