// Package worker is the Go side of cgpool's worker protocol: a worker
// program is a few lines,
//
//	func main() {
//		worker.Serve(func(ctx context.Context, t *worker.Task) ([]byte, error) {
//			return bytes.ToUpper(t.Payload), nil
//		})
//	}
//
// The supervisor starts the program inside its cgroup slot with a socket on
// fd 3. Serve says hello (pid, protocol version, and the initializer's error
// if it failed), then runs tasks one at a time until the supervisor asks it
// to exit (it runs the finalizer and returns nil) or closes the socket. A
// trim request is answered after debug.FreeOSMemory with the process's RSS.
//
// It does not enforce timeouts or memory limits: the supervisor owns every
// deadline and kills the whole cgroup. Serve is meant to be called once,
// from main.
package worker
