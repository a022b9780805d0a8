// Package client is the Go client library of cgpool: it connects to a
// cgpool supervisor over its unix socket, submits tasks to the
// supervisor's pools and waits for their outcomes, and sends the
// introspection and administration requests (stats, status, set_env,
// recycle, shutdown). It speaks the client protocol of docs/protocol.md
// (§3) through package ipc.
//
//	c, err := client.Dial(ctx, "/run/cgpool/cgpool.sock")
//	...
//	defer c.Close()
//	f, err := c.Submit(ctx, client.Task{Pool: "default", Payload: input})
//	...
//	res, err := f.Wait(ctx)
//	var pe *client.ProcessError
//	if errors.As(err, &pe) && pe.OOM() { ... }
//
// # What it owns
//
//   - One connection per [Client]: [Dial] connects and does the handshake
//     ([ipc.ClientHello]); [Client.Close] closes it.
//   - Ids: submissions and requests take their ids from one per-Client
//     counter starting at 1, as the protocol requires (unique per
//     connection). A cancel uses its submission's id.
//   - Pipelining and dispatch: any number of submissions and requests may
//     be in flight. One reader goroutine per Client reads every frame and
//     hands it, by id, to the [Future] or the waiting request it answers;
//     frames about unknown ids (late answers to abandoned requests) and of
//     unknown types are ignored.
//   - The mapping of the protocol's outcomes to Go values: [Result] for
//     "result" (with stdout and stderr split for exec pools), and typed
//     errors for the others: [*RejectedError] (errors.Is with
//     [ErrQueueFull], [ErrDraining], [ErrInvalid], [ErrTooLarge],
//     [ErrUnknownPool]), [*TaskError], [*TimeoutError], [*ProcessError],
//     [*CancelledError], [*QueueTimeoutError]; [ErrClosed] when the
//     connection is gone; *ipc.RemoteError for error answers to requests.
//
// # What it does not own
//
// It does not interpret payloads (task input and output, pickled
// exceptions are opaque bytes), nor the stats and status documents
// (json.RawMessage). It does not retry, reconnect, or resubmit: after
// [ErrClosed] the caller dials again and decides what to resubmit — a task
// whose outcome was lost with the connection may or may not have run. It
// does not wait for acceptance before returning from [Client.Submit]:
// backpressure shows up as a *RejectedError with [ErrQueueFull] (or, with
// Task.Hold, as a late acceptance), never as a blocked Submit. Scheduling,
// limits and the disconnect policy are the supervisor's.
//
// # Concurrency
//
// [Client] and [Future] are safe for concurrent use by any number of
// goroutines. Submit and the requests write their frame directly (frames
// are never interleaved) and do not wait for each other. Each Client runs
// exactly one goroutine, its reader, from Dial until the connection ends;
// [Client.Close] closes the connection and returns only after the reader
// has exited. Every blocking call takes a context: ending it stops the
// wait but never cancels a task (use [Future.Cancel]). Values handed out
// ([Result], error structs, payloads) are not shared with the Client after
// they are delivered, except that all waiters of one Future get the same
// ones: treat them as read-only.
//
// This package imports no other cgpool package than ipc.
package client
