package pool

// Stats are a pool's statistics. The first eight keys are Deadpool's,
// named exactly as Deadpool names them.
type Stats struct {
	TasksReceived              int64 `json:"tasks_received"`
	TasksLaunched              int64 `json:"tasks_launched"`
	TasksFailed                int64 `json:"tasks_failed"`
	WorkerProcessesCreated     int64 `json:"worker_processes_created"`
	MaxWorkersBusyConcurrently int64 `json:"max_workers_busy_concurrently"`
	WorkerProcessesStillAlive  int64 `json:"worker_processes_still_alive"`
	WorkerProcessesIdle        int64 `json:"worker_processes_idle"`
	WorkerProcessesBusy        int64 `json:"worker_processes_busy"`

	TasksSucceeded int64 `json:"tasks_succeeded"`
	TasksCancelled int64 `json:"tasks_cancelled"`
	TasksRejected  int64 `json:"tasks_rejected"`
	TasksQueued    int64 `json:"tasks_queued"`
	// TasksNeverStarted counts tasks that ended before they started
	// (cancelled, queue timeout, no worker could start), so that
	// tasks_received = tasks_launched + tasks_never_started + tasks_queued.
	TasksNeverStarted int64 `json:"tasks_never_started"`
	TasksRunning      int64 `json:"tasks_running"`
	// FailuresByReason counts failed tasks by why: task_error, timeout,
	// queue_timeout, oom, killed, crashed.
	FailuresByReason        map[string]int64 `json:"failures_by_reason"`
	LeftoverProcessesKilled int64            `json:"leftover_processes_killed"`
	WorkersRetired          int64            `json:"workers_retired"`
	WorkersTrimmed          int64            `json:"workers_trimmed"`
	InitializerFailures     int64            `json:"initializer_failures"`
	WorkerStartFailures     int64            `json:"worker_start_failures"`
	// LastStartError is why the last failed worker start failed.
	LastStartError string `json:"last_start_error,omitempty"`
	// SlotPanics counts internal errors that a slot survived by being
	// replaced (each is a bug in cgpool, logged with its stack).
	SlotPanics int64 `json:"slot_panics"`
	MaxWorkers int   `json:"max_workers"`
	MinWorkers int   `json:"min_workers"`
	// MissingGuarantees names what does not hold for this pool's tasks:
	// set in reduced mode (no writable cgroup v2: process groups stand in
	// for cgroups, see cgroup.ReducedMissing), empty otherwise.
	MissingGuarantees []string `json:"missing_guarantees,omitempty"`
}

// WorkerStatus is one worker slot as `cgpool ps` shows it.
type WorkerStatus struct {
	Slot          string `json:"slot"`
	Pid           int    `json:"pid"`
	Leaf          string `json:"leaf"`
	State         string `json:"state"` // starting, idle, busy, retiring
	Task          uint64 `json:"task,omitempty"`
	MemoryCurrent int64  `json:"memory_current"`
	MemoryPeak    int64  `json:"memory_peak"`
	TasksDone     int64  `json:"tasks_done"`
	// StartError is why the slot's last start failed, while it retries.
	StartError string `json:"start_error,omitempty"`

	taskUID int64 // the uid of the peer whose task runs, or -1
}

// Status is a pool's state for `cgpool ps`.
type Status struct {
	Pool    string         `json:"pool"`
	Kind    Kind           `json:"kind"`
	Workers []WorkerStatus `json:"workers"`
	// Env is the pool's environment (what SetEnv set), for cgpool env;
	// null where it is not shown.
	Env map[string]string `json:"env"`
	// MissingGuarantees: as in Stats.
	MissingGuarantees []string `json:"missing_guarantees,omitempty"`
}

// redact removes what a peer of uid may not see of other peers' work: the
// pid, cgroup, task id and memory of every slot that does not run one of
// its own tasks. States and counts stay.
func (st *Status) redact(uid uint32) {
	for i := range st.Workers {
		w := &st.Workers[i]
		if w.taskUID == int64(uid) {
			continue
		}
		w.Pid, w.Leaf, w.Task, w.MemoryCurrent, w.MemoryPeak = 0, "", 0, 0, 0
	}
}
