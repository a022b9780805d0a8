package main

import (
	"context"

	"github.com/cgpool/cgpool/worker"
	"github.com/spf13/cobra"
)

// echoWorkerCmd is a worker program that answers each task with its
// payload: the no-op worker of the benchmarks, and a template.
func echoWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "echo-worker",
		Short:  "A worker program that answers each task with its input (for benchmarks and tests)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return worker.Serve(func(_ context.Context, t *worker.Task) ([]byte, error) { return t.Payload, nil })
		},
	}
}
