package pool

// SetTestHookRunTask sets a function that each slot goroutine calls as it
// starts a task (nil: none).
func SetTestHookRunTask(f func(payload []byte, argv []string)) {
	if f == nil {
		testHookRunTask = nil
		return
	}
	testHookRunTask = func(t *Task) { f(t.spec.Payload, t.spec.Argv) }
}

// OutcomeFrame is outcomeFrame, for the tests of the wire's names.
var OutcomeFrame = outcomeFrame
