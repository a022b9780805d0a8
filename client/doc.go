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
//	if u := f.Usage(); u != nil { // what it cost, whatever the outcome
//		fmt.Println(u.Wall, u.CPUUser+u.CPUSystem, u.MemoryPeak, u.MemoryPeakScope)
//	}
//
// # What it owns
//
//   - One connection per [Client]: [Dial] connects and does the handshake
//     ([ipc.ClientHello]); [Client.Close] closes it.
//   - Ids: submissions and requests take their ids from one per-Client
//     counter starting at 1, as the protocol requires (unique per
//     connection). A cancel uses its submission's id.
//   - Pipelining and dispatch: any number of submissions and requests may
//     be in flight. One goroutine at a time reads the connection and hands
//     every frame, by id, to the [Future] or the waiting request it
//     answers; frames about unknown ids (late answers to abandoned
//     requests) and of unknown types are ignored. Which goroutine reads is
//     described under Concurrency.
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
// are never interleaved) and do not wait for each other.
//
// A goroutine that waits ([Future.Wait], [Future.Accepted], a request, a
// cancel) reads the connection itself when no other goroutine does, so
// that the answer it waits for wakes it directly: on small VMs, handing
// every answer over from a reader goroutine costs a thread wake-up, about
// as much as the rest of a no-op round trip. Other waiters queue and take
// over in turn. Each Client also runs one background goroutine, from Dial
// to [Client.Close], which reads when nobody may be waiting: while two or
// more submissions are unfinished, or while an unfinished Future is
// watched ([Future.Done], [Future.PID], [Future.Leaf], [Future.Running]).
// So a single submission that nobody waits for or watches leaves its
// answers in the socket until someone does; everything else behaves as
// with a dedicated reader. [Client.Close] closes the connection, fails
// what is pending and returns after the background goroutine has exited.
// Every blocking call takes a context: ending it stops the wait but never
// cancels a task (use [Future.Cancel]). Values handed out
// ([Result], error structs, payloads) are not shared with the Client after
// they are delivered, except that all waiters of one Future get the same
// ones: treat them as read-only.
//
// This package imports no other cgpool package than ipc.
package client
